"""``flare call URL /pkg.Service/Method '<json>'``: call any route with JSON in and out.

What the command does and promises is its help text, `DESCRIPTION` (and
`flare_runtime.cli.remote`'s). The route and its message types come from the
server's reflection (`flare_runtime.reflection.schema`), so no generated code is
needed; ``--generated DIR`` uses local generated modules instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, TextIO

from flare_runtime.cli.remote import (
    CONNECTION_HELP,
    Remote,
    UsageError,
    add_connection_arguments,
    run,
)

if TYPE_CHECKING:
    from google.protobuf.descriptor_pool import DescriptorPool
    from google.protobuf.message import Message

    from flare_runtime.client import Channel
    from flare_runtime.interceptors import ClientCallInfo
    from flare_runtime.metadata import Metadata
    from flare_runtime.reflection.schema import Schema
    from flare_runtime.routing import Route

DESCRIPTION = f"""\
Call a route with JSON, like grpcurl: one JSON line per response on stdout.

REQUEST is protobuf JSON: one object for a unary or server-streaming method; for a
client-streaming or bidi method, a JSON array of objects, or objects one after
another (one per line: NDJSON). "-" reads REQUEST from stdin; for a streaming
method each request is sent as soon as it has been read, so a bidi call can be
driven interactively. Without REQUEST the request is {{}} (a client stream of none).

-v prints the resolved route, the request metadata, the response headers and
trailers and the final status on stderr. --emit-defaults prints fields that hold
their default values too.

{CONNECTION_HELP}"""


def configure(parser: argparse.ArgumentParser) -> None:
    """Set up ``flare call``'s arguments."""
    parser.description = DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    add_connection_arguments(parser)
    parser.add_argument(
        "method", metavar="METHOD", help="/package.Service/Method (or package.Service.Method)"
    )
    parser.add_argument(
        "json", nargs="?", metavar="REQUEST", help="request JSON; '-' reads stdin (default: {})"
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="print the route, metadata, headers, trailers and status on stderr",
    )
    parser.add_argument(
        "--emit-defaults",
        action="store_true",
        help="print fields holding their default value (0, '', false, [])",
    )
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Make the call; print JSON responses (see `DESCRIPTION`)."""
    from flare_runtime.reflection.schema import SchemaError, split_method  # noqa: PLC0415

    try:
        remote = Remote.from_arguments("call", args)
        split_method(args.method)
        text = None if args.json == "-" else (args.json if args.json is not None else "{}")
    except (UsageError, SchemaError) as error:
        print(f"flare call: {error}", file=sys.stderr)
        return 2

    capture = Capture() if args.verbose else None

    def prepare(schema: Schema) -> tuple[Route[Any, Any], AsyncIterator[Message], Printer]:
        route = schema.route(args.method)
        check_transport(remote.url, route)
        if text is not None:
            source: AsyncIterator[Message] = _aiter(parse_requests(text, route, schema.pool))
        elif route.cardinality.client_streams and not _is_file(sys.stdin):
            source = read_requests(sys.stdin, route, schema.pool)
        else:
            source = _aiter(parse_requests(sys.stdin.read(), route, schema.pool))
        return route, source, Printer(pool=schema.pool, emit_defaults=args.emit_defaults)

    async def body(remote: Remote) -> int:
        if text is not None:
            JsonValues().all(text)  # bad JSON fails before connecting
        local = remote.local_schema()
        # With local code, every check is made before connecting.
        prepared = None if local is None else prepare(local)
        interceptors = [] if capture is None else [capture.interceptor()]
        async with remote.connect(interceptors=interceptors) as channel:
            if prepared is None:
                prepared = prepare(await remote.schema(channel, [args.method]))
            route, source, printer = prepared
            verbose = None if capture is None else Verbose(sys.stderr, capture)
            await call(channel, route, source, remote=remote, show=printer, verbose=verbose)
        return 0

    return run(remote, body)


# ---------------------------------------------------------------------------- requests


def parse_requests(text: str, route: Route[Any, Any], pool: DescriptorPool) -> list[Message]:
    """The requests in `text` (see `DESCRIPTION`); raises `UsageError` for bad JSON or count."""
    values = JsonValues().all(text)
    requests = [_message(value, route, pool, index) for index, value in enumerate(values)]
    if not route.cardinality.client_streams and len(requests) != 1:
        raise UsageError(f"bad request JSON: {route.path} takes one request, got {len(requests)}")
    return requests


async def read_requests(
    stream: TextIO, route: Route[Any, Any], pool: DescriptorPool
) -> AsyncIterator[Message]:
    """Requests read from a pipe or terminal, each yielded as soon as it is complete."""
    import asyncio  # noqa: PLC0415

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), stream
    )
    decoder = JsonValues()
    index = 0
    try:
        while True:
            line = await reader.readline()
            values = decoder.feed(line.decode()) if line else decoder.end()
            for value in values:
                yield _message(value, route, pool, index)
                index += 1
            if not line:
                return
    finally:
        transport.close()


def _message(value: Any, route: Route[Any, Any], pool: DescriptorPool, index: int) -> Message:
    from google.protobuf import json_format  # noqa: PLC0415

    request: Message = route.request_type()
    try:
        json_format.ParseDict(value, request, descriptor_pool=pool)
    except (json_format.ParseError, TypeError, ValueError) as error:
        # json_format raises TypeError for a JSON value of the wrong shape (5 for a message).
        raise UsageError(f"bad request JSON (request {index + 1}): {error}") from None
    return request


class JsonValues:
    """Splits text fed line by line into JSON values: objects one after another
    (NDJSON, or pretty-printed), where an array stands for its items."""

    def __init__(self) -> None:
        self._buffer = ""
        self._decoder = json.JSONDecoder()

    def feed(self, text: str) -> list[Any]:
        """The values completed by `text`; raises `UsageError` for text that is not JSON."""
        self._buffer += text
        values: list[Any] = []
        while True:
            start = len(self._buffer) - len(self._buffer.lstrip())
            if start == len(self._buffer):
                self._buffer = ""
                return values
            try:
                value, end = self._decoder.raw_decode(self._buffer, start)
            except json.JSONDecodeError as error:
                # Incomplete (more lines to come) when it fails at the end of the text.
                if error.pos >= len(self._buffer.rstrip()):
                    self._buffer = self._buffer[start:]
                    return values
                raise UsageError(f"bad request JSON: {error}") from None
            values.extend(value if isinstance(value, list) else [value])
            self._buffer = self._buffer[end:]

    def all(self, text: str) -> list[Any]:
        """Every value in `text`, a whole input; raises `UsageError` for text that is not JSON."""
        return [*self.feed(text), *self.end()]

    def end(self) -> list[Any]:
        """Call at the end of the input; raises `UsageError` when a value is unfinished."""
        if self._buffer.strip():
            try:
                json.loads(self._buffer)
            except json.JSONDecodeError as error:
                raise UsageError(f"bad request JSON: {error}") from None
        return []


async def _aiter(items: list[Message]) -> AsyncIterator[Message]:
    for item in items:
        yield item


def _is_file(stream: TextIO) -> bool:
    """True when `stream` is a regular file (read at once), not a pipe or terminal."""
    import os  # noqa: PLC0415
    import stat  # noqa: PLC0415

    try:
        return stat.S_ISREG(os.fstat(stream.fileno()).st_mode)
    except (OSError, ValueError):  # no file descriptor (a test's StringIO)
        return True


def check_transport(url: str, route: Route[Any, Any]) -> None:
    """Raise `UsageError` when the server does not serve `route` on `url`'s transport."""
    from flare_runtime.reflection.schema import transport_of  # noqa: PLC0415

    transport = transport_of(url)
    if transport not in route.options.transports:
        served = ", ".join(sorted(kind.value for kind in route.options.transports)) or "none"
        raise UsageError(f"{route.path} is not served on {transport.value} (served on: {served})")


# ---------------------------------------------------------------------------- the call


class Printer:
    """Prints messages as one JSON line each on stdout."""

    def __init__(self, *, pool: DescriptorPool, emit_defaults: bool) -> None:
        self.pool = pool
        self.emit_defaults = emit_defaults
        self.count = 0

    def text(self, message: Message) -> str:
        """`message` as one line of protobuf JSON."""
        from google.protobuf import json_format  # noqa: PLC0415

        return json_format.MessageToJson(
            message,
            indent=None,
            descriptor_pool=self.pool,
            always_print_fields_with_no_presence=self.emit_defaults,
        )

    def as_dict(self, message: Message) -> Any:
        """`message` as the JSON value `text` prints (for embedding in other JSON)."""
        from google.protobuf import json_format  # noqa: PLC0415

        return json_format.MessageToDict(
            message,
            descriptor_pool=self.pool,
            always_print_fields_with_no_presence=self.emit_defaults,
        )

    def __call__(self, message: Message) -> None:
        self.count += 1
        print(self.text(message), flush=True)


class Verbose:
    """What ``-v`` prints on stderr, in grpcurl's order."""

    def __init__(self, out: TextIO, capture: Capture) -> None:
        self.out = out
        self.capture = capture

    def line(self, text: str) -> None:
        """One line on stderr."""
        print(text, file=self.out, flush=True)

    def call_metadata(self, route: Route[Any, Any]) -> None:
        """The response headers and trailers of the call of `route`, as captured."""
        from flare_runtime.metadata import EMPTY_METADATA  # noqa: PLC0415

        info = self.capture.calls.get(route.path)
        self.metadata("response headers", EMPTY_METADATA if info is None else info.response_headers)
        self.metadata("response trailers", EMPTY_METADATA if info is None else info.trailers)

    def metadata(self, title: str, metadata: Metadata) -> None:
        """`title` then each entry of `metadata` (bytes values as hex)."""
        self.line(f"{title}:" if metadata else f"{title}: (none)")
        for key, value in metadata.entries():
            shown = value.hex() if isinstance(value, bytes) else value
            self.line(f"  {key}: {shown}")


async def call(
    channel: Channel,
    route: Route[Any, Any],
    requests: AsyncIterator[Message],
    *,
    remote: Remote,
    show: Printer,
    verbose: Verbose | None,
) -> None:
    """Make one call of any cardinality; `show` each response. Raises `RpcError`."""
    from flare_runtime.errors import RpcError  # noqa: PLC0415
    from flare_runtime.routing import Cardinality  # noqa: PLC0415

    if verbose is not None:
        wire = f", wire id {route.service_id}:{route.route_id}" if route.wire_id else ""
        verbose.line(f"route: {route.path} ({route.cardinality.value}{wire})")
        verbose.metadata("request metadata", remote.metadata)
    options: dict[str, Any] = {"timeout": remote.time_left(), "metadata": remote.metadata}
    sent = _Counted(requests)
    cardinality = route.cardinality
    try:
        if cardinality.server_streams:
            if cardinality is Cardinality.SERVER_STREAM:
                first = await _single(sent, route)
                stream: Any = channel.unary_stream(route, first, **options)
            else:
                stream = channel.stream_stream(route, **options)
            async with stream:
                sender = (
                    None if cardinality is Cardinality.SERVER_STREAM else _send_all(stream, sent)
                )
                try:
                    if verbose is not None:
                        verbose.metadata("response headers", await stream.initial_metadata())
                    async for reply in stream:
                        show(reply)
                    if sender is not None:
                        await sender
                except RpcError:
                    # Bad input cancels the call: report the input, not the cancellation.
                    if sender is not None and sender.done() and not sender.cancelled():
                        failure = sender.exception()
                        if isinstance(failure, UsageError):
                            raise failure from None
                    raise
                finally:
                    if sender is not None and not sender.done():
                        sender.cancel()
                if verbose is not None:
                    verbose.metadata("response trailers", stream.trailing_metadata())
        else:
            if cardinality is Cardinality.UNARY:
                show(await channel.unary_unary(route, await _single(sent, route), **options))
            else:
                show(await channel.stream_unary(route, sent, **options))
            if verbose is not None:
                verbose.call_metadata(route)
    except RpcError as error:
        if verbose is not None:
            if not cardinality.server_streams:
                verbose.call_metadata(route)
            verbose.line(f"status: {error.code.name}: {error.message}")
            verbose.line(f"sent {sent.count} request(s), received {show.count} response(s)")
        raise
    if verbose is not None:
        verbose.line("status: OK")
        verbose.line(f"sent {sent.count} request(s), received {show.count} response(s)")


class _Counted:
    """An async iterator of requests that counts what was taken from it."""

    def __init__(self, requests: AsyncIterator[Message]) -> None:
        self._requests = requests
        self.count = 0

    def __aiter__(self) -> _Counted:
        return self

    async def __anext__(self) -> Message:
        request = await anext(self._requests)
        self.count += 1
        return request


async def _single(requests: _Counted, route: Route[Any, Any]) -> Message:
    collected = [request async for request in requests]
    if len(collected) != 1:
        raise UsageError(f"bad request JSON: {route.path} takes one request, got {len(collected)}")
    return collected[0]


def _send_all(stream: Any, requests: _Counted) -> Any:
    """Send `requests` on bidi `stream` from a task; bad input cancels the call."""
    import asyncio  # noqa: PLC0415

    async def send() -> None:
        try:
            async for request in requests:
                await stream.send(request)
        except UsageError:
            stream.cancel()
            raise
        await stream.done_writing()

    return asyncio.get_running_loop().create_task(send())


class Capture:
    """Keeps the `ClientCallInfo` (response headers, trailers) of each call, by route path."""

    def __init__(self) -> None:
        self.calls: dict[str, ClientCallInfo] = {}

    def interceptor(self) -> Any:
        """A client interceptor recording into this object (``connect(interceptors=...)``)."""
        from flare_runtime.interceptors import ClientInterceptor  # noqa: PLC0415

        calls = self.calls

        class Recording(ClientInterceptor):
            async def intercept_unary(
                self, request: Message, info: ClientCallInfo, call_next: Any
            ) -> Message:
                calls[info.route.path] = info
                response: Message = await call_next(request, info)
                return response

            def intercept_stream(
                self, requests: AsyncIterator[Message], info: ClientCallInfo, call_next: Any
            ) -> AsyncIterator[Message]:
                calls[info.route.path] = info
                responses: AsyncIterator[Message] = call_next(requests, info)
                return responses

        return Recording()
