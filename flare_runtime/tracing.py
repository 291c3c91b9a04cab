"""OpenTelemetry tracing of Flare calls: a server and a client interceptor.

::

    from flare_runtime.tracing import TracingClientInterceptor, TracingServerInterceptor

    server = flare.Server([...], interceptors=[TracingServerInterceptor()])
    channel = await flare.connect(url, interceptors=[TracingClientInterceptor()])

Both are ordinary interceptors (`flare_runtime.interceptors`), so they work
alike on every transport, plugins included, with no transport code of their
own. They use only the OpenTelemetry *API* (``pip install 'flare-rpc[otel]'``);
the application installs and configures an SDK and exporter, as with any
instrumentation library. Without an SDK every span is OpenTelemetry's no-op
span. docs/tracing.md has the span names, attributes and limits.

* **Propagation.** The client interceptor injects the current context into the
  call's metadata with the configured text-map propagator (by default the
  global one: W3C ``traceparent`` / ``tracestate``, and ``baggage``), replacing
  any such entries the caller set. The server interceptor extracts it from the
  call metadata; a missing or malformed ``traceparent`` starts a new trace
  (the W3C rules: an invalid header is ignored, never an error).
* **Server spans** (kind SERVER) cover a call from when the interceptor chain
  reaches this interceptor to the handler's return (unary) or the last
  response (streams). The span is the current span while the handler runs, so
  a call the handler makes through a traced channel is its child.
* **Client spans** (kind CLIENT) cover a call from its start to its response
  (unary) or the end of its response stream; their parent is the context
  current where the call was made.
* **Attributes** (OpenTelemetry's RPC conventions): ``rpc.system`` (``grpc``
  for a server's gRPC calls, ``flare`` otherwise), ``rpc.service``,
  ``rpc.method``, ``rpc.grpc.status_code`` (Flare's codes are gRPC's, so every
  transport reports it), and ``flare.transport`` on server spans. Span names
  are ``package.Service/Method``. A span's status is ERROR, with the
  `RpcError`'s message, for the codes gRPC's conventions count as server
  errors (UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE,
  DATA_LOSS) on server spans, and for every code but OK on client spans.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, cast

from google.protobuf.message import Message

from flare_runtime.context import CallContext
from flare_runtime.errors import ConfigurationError, RpcError
from flare_runtime.interceptors import (
    ClientCallInfo,
    ClientInterceptor,
    ClientStreamCallNext,
    ClientUnaryCallNext,
    ServerInterceptor,
    StreamCallNext,
    UnaryCallNext,
)
from flare_runtime.metadata import Metadata
from flare_runtime.routing import Route, Transport
from flare_runtime.status import StatusCode

if TYPE_CHECKING:
    from opentelemetry.propagators.textmap import Getter, TextMapPropagator
    from opentelemetry.trace import Span, Tracer, TracerProvider

__all__ = ["TracingClientInterceptor", "TracingServerInterceptor"]

INSTRUMENTATION_NAME = "flare_runtime"
"""The instrumentation scope of Flare's spans."""

SERVER_ERRORS = frozenset(
    {
        StatusCode.UNKNOWN,
        StatusCode.DEADLINE_EXCEEDED,
        StatusCode.UNIMPLEMENTED,
        StatusCode.INTERNAL,
        StatusCode.UNAVAILABLE,
        StatusCode.DATA_LOSS,
    }
)
"""The codes that mark a server span ERROR (OpenTelemetry's gRPC conventions)."""

_STATUS_KEY = "rpc.grpc.status_code"
_EXPECTED = (RpcError, asyncio.CancelledError, GeneratorExit)


def _otel() -> Any:
    """The ``opentelemetry`` package, or a `ConfigurationError` saying what to install."""
    try:
        import opentelemetry.context  # noqa: PLC0415 -- an optional dependency
        import opentelemetry.propagate  # noqa: PLC0415
        import opentelemetry.trace  # noqa: PLC0415
    except ImportError:
        raise ConfigurationError(
            "tracing needs opentelemetry-api: pip install 'flare-rpc[otel]'"
        ) from None
    return opentelemetry


class _MetadataGetter:
    """Reads text-map entries from call `Metadata` (binary ``-bin`` entries are skipped)."""

    @staticmethod
    def get(carrier: Metadata, key: str) -> list[str] | None:
        values = [value for value in carrier.get_all(key) if isinstance(value, str)]
        return values or None

    @staticmethod
    def keys(carrier: Metadata) -> list[str]:
        return list(carrier)


# The Getter protocol, without importing OpenTelemetry to subclass it.
_GETTER = cast("Getter[Metadata]", _MetadataGetter())


def _code_of(error: BaseException, deadline: float | None = None) -> StatusCode:
    """The status a call ending with `error` reports (as `flare_runtime.dispatch` maps it)."""
    if isinstance(error, RpcError):
        return error.code
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        if deadline is not None and time.monotonic() >= deadline:
            return StatusCode.DEADLINE_EXCEEDED
        return StatusCode.CANCELLED
    if isinstance(error, TimeoutError):
        return StatusCode.DEADLINE_EXCEEDED
    if isinstance(error, NotImplementedError):
        return StatusCode.UNIMPLEMENTED
    return StatusCode.INTERNAL


class _Tracing:
    """What both interceptors share: the tracer, the propagator, attributes per route."""

    def __init__(
        self,
        tracer_provider: TracerProvider | None,
        propagator: TextMapPropagator | None,
    ) -> None:
        otel = _otel()
        self._trace = otel.trace
        self._context = otel.context
        self._status = otel.trace.Status
        self._error = otel.trace.StatusCode.ERROR
        self.tracer: Tracer = otel.trace.get_tracer(
            INSTRUMENTATION_NAME, tracer_provider=tracer_provider
        )
        self._propagator = propagator
        self._propagate = otel.propagate
        self._names: dict[str, tuple[str, dict[str, Any]]] = {}

    @property
    def propagator(self) -> TextMapPropagator:
        """The given propagator, or the global one (read per call: it may be set later)."""
        if self._propagator is not None:
            return self._propagator
        propagator: TextMapPropagator = self._propagate.get_global_textmap()
        return propagator

    def name_and_attributes(
        self, route: Route[Any, Any], system: str
    ) -> tuple[str, dict[str, Any]]:
        """The span name and the route's attributes, computed once per route and system."""
        key = f"{system} {route.path}"
        found = self._names.get(key)
        if found is None:
            name = route.path.lstrip("/")
            service, _, method = name.rpartition("/")
            attributes = {"rpc.system": system, "rpc.service": service, "rpc.method": method}
            found = self._names[key] = (name, attributes)
        return found

    def finish(
        self, span: Span, code: StatusCode, error: BaseException | None, *, server: bool
    ) -> None:
        """Set the span's status code attribute and status, then end it."""
        if span.is_recording():
            span.set_attribute(_STATUS_KEY, int(code))
            if code is not StatusCode.OK and (not server or code in SERVER_ERRORS):
                description = error.message if isinstance(error, RpcError) else code.name
                span.set_status(self._status(self._error, description))
                if error is not None and not isinstance(error, _EXPECTED):
                    span.record_exception(error)  # a bug: its traceback helps
        span.end()


class TracingServerInterceptor(ServerInterceptor, _Tracing):
    """Starts a SERVER span per call, child of the context the call's metadata carries.

    `tracer_provider`: where spans go (default: the global provider);
    `propagator`: how the context is read (default: the global text-map
    propagator, W3C trace context and baggage unless configured otherwise).
    Put it first in ``Server(interceptors=...)`` so its span covers the others.
    """

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        propagator: TextMapPropagator | None = None,
    ) -> None:
        _Tracing.__init__(self, tracer_provider, propagator)

    def _start(self, context: CallContext) -> Span:
        transport = context.transport
        system = "grpc" if transport is Transport.GRPC else "flare"
        name, attributes = self.name_and_attributes(context.route, system)
        parent = self.propagator.extract(context.metadata, getter=_GETTER)
        span = self.tracer.start_span(
            name, parent, kind=self._trace.SpanKind.SERVER, attributes=attributes
        )
        if span.is_recording():
            span.set_attribute("flare.transport", transport.value)
        return span

    async def intercept_unary(
        self, request: Message, context: CallContext, call_next: UnaryCallNext
    ) -> Message:
        span = self._start(context)
        token = self._context.attach(self._trace.set_span_in_context(span))
        try:
            response = await call_next(request, context)
        except BaseException as error:
            self.finish(span, _code_of(error, context.deadline), error, server=True)
            raise
        finally:
            self._context.detach(token)
        self.finish(span, StatusCode.OK, None, server=True)
        return response

    def intercept_stream(
        self,
        requests: AsyncIterator[Message],
        context: CallContext,
        call_next: StreamCallNext,
    ) -> AsyncIterator[Message]:
        return self._stream(requests, context, call_next)

    async def _stream(
        self,
        requests: AsyncIterator[Message],
        context: CallContext,
        call_next: StreamCallNext,
    ) -> AsyncIterator[Message]:
        span = self._start(context)
        current = self._trace.set_span_in_context(span)
        attach, detach = self._context.attach, self._context.detach
        # The handler's code runs inside each step of its response iterator:
        # the span is current for each step, and not in between (this
        # generator's consumer may be anywhere).
        token = attach(current)
        try:
            responses = call_next(requests, context)
        finally:
            detach(token)
        try:
            while True:
                token = attach(current)
                try:
                    response = await anext(responses)
                except StopAsyncIteration:
                    break
                finally:
                    detach(token)
                yield response
        except BaseException as error:
            self.finish(span, _code_of(error, context.deadline), error, server=True)
            raise
        finally:
            close = getattr(responses, "aclose", None)
            if close is not None:
                await close()
        self.finish(span, StatusCode.OK, None, server=True)


class TracingClientInterceptor(ClientInterceptor, _Tracing):
    """Starts a CLIENT span per call and sends its context in the call's metadata.

    The span's parent is the context current where the call is made (inside a
    traced handler: the handler's server span). Arguments as for
    `TracingServerInterceptor`.
    """

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        propagator: TextMapPropagator | None = None,
    ) -> None:
        _Tracing.__init__(self, tracer_provider, propagator)

    def _start(self, info: ClientCallInfo) -> Span:
        name, attributes = self.name_and_attributes(info.route, "flare")
        span = self.tracer.start_span(name, kind=self._trace.SpanKind.CLIENT, attributes=attributes)
        carrier: dict[str, str] = {}
        self.propagator.inject(carrier, self._trace.set_span_in_context(span))
        if carrier:
            kept = [(key, value) for key, value in info.metadata.entries() if key not in carrier]
            info.metadata = Metadata([*kept, *carrier.items()])
        return span

    def _deadline(self, info: ClientCallInfo, started: float) -> float | None:
        return None if info.timeout is None else started + info.timeout

    async def intercept_unary(
        self, request: Message, info: ClientCallInfo, call_next: ClientUnaryCallNext
    ) -> Message:
        started = time.monotonic()
        span = self._start(info)
        try:
            response = await call_next(request, info)
        except BaseException as error:
            self.finish(span, _code_of(error, self._deadline(info, started)), error, server=False)
            raise
        self.finish(span, StatusCode.OK, None, server=False)
        return response

    def intercept_stream(
        self,
        requests: AsyncIterator[Message],
        info: ClientCallInfo,
        call_next: ClientStreamCallNext,
    ) -> AsyncIterator[Message]:
        return self._stream(requests, info, call_next)

    async def _stream(
        self,
        requests: AsyncIterator[Message],
        info: ClientCallInfo,
        call_next: ClientStreamCallNext,
    ) -> AsyncIterator[Message]:
        # Runs when the channel starts the call, in the context it was made in.
        started = time.monotonic()
        span = self._start(info)
        responses = call_next(requests, info)
        try:
            async for response in responses:
                yield response
        except BaseException as error:
            self.finish(span, _code_of(error, self._deadline(info, started)), error, server=False)
            raise
        finally:
            close = getattr(responses, "aclose", None)
            if close is not None:
                await close()
        self.finish(span, StatusCode.OK, None, server=False)
