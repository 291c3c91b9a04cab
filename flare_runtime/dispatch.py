"""Transport-neutral call dispatch: auth, interceptors, handler, error mapping.

Every transport runs calls through one `Dispatcher`: the Flare wire endpoint
(WebSocket, QUIC) and the gRPC adapter alike. A transport's job is only to
turn its frames into the arguments below and the results back into frames.

The contract, per call::

    routes = dispatcher.wire_routes(transport)     # once per connection (WebSocket, QUIC);
    bound = routes.get(wire_id)                    # gRPC registers dispatcher.routes(GRPC)
    if bound is None: -> UNIMPLEMENTED             #   with grpcio, which looks paths up
        (dispatcher.unknown_route_error(wire_id))
    context = CallContext(bound.route, transport, metadata, deadline, peer, principal, ...)
    # one of, by bound.route.cardinality:
    response  = await bound.unary(request, context, connection_auth)
                # (= dispatcher.unary(bound, ...): the same precomputed runner)
    responses =       dispatcher.server_stream(bound, request, context, connection_auth)
    response  = await dispatcher.client_stream(bound, requests, context, connection_auth)
    responses =       dispatcher.bidi_stream(bound, requests, context, connection_auth)

The dispatcher owns the lookup: `wire_routes` and `routes` hand out
`ServedRoute` entries with each route's ``transports`` option applied, so a
route is found only on the transports it is served on.

Guarantees:

* **Auth before the handler.** ``connection_auth`` is what the connection
  established at connect (`authenticate_connection`), or None (gRPC). A call
  carrying its own ``authorization`` metadata is authenticated on its own.
  A route needing authentication without a principal fails UNAUTHENTICATED
  (with the connection's auth error as message, e.g. "token expired"); a
  principal missing a route scope fails PERMISSION_DENIED. Metadata with
  several ``authorization`` entries fails UNAUTHENTICATED before any plugin
  runs (ambiguous credentials are never resolved by picking one).
  ``context.principal`` is set before interceptors run.
* **Interceptors** run in order around the handler (`flare_runtime.interceptors`).
* **Responses** are not type-checked here: a transport checks each one is
  exactly the route's response type before serializing it, and answers
  `wrong_response_error` (INTERNAL) otherwise -- the same on every transport.
* **Errors**: every failure leaves these methods (or the response iterators)
  as `RpcError`. A handler's `RpcError` passes unchanged; `TimeoutError`
  becomes DEADLINE_EXCEEDED; `NotImplementedError` (what a method that is not
  ready raises: the generated base's methods are abstract) becomes
  UNIMPLEMENTED; any other exception is logged on the ``flare_runtime.server``
  logger with its traceback (rate-limited) and becomes
  ``INTERNAL: internal error`` -- internals never reach the client.
  `asyncio.CancelledError` propagates untouched.
* **Deadlines and cancellation** are enforced by the caller of these methods,
  around the whole call including sending responses: cancel the task running
  the call when the peer cancels or when ``context.deadline`` passes, and
  report DEADLINE_EXCEEDED then. The wire protocol's connection timer and
  gRPC both do this natively.
* **Cost**: no task is created here. Each unary route's whole call (the auth
  check, the interceptor chain or the bare handler, the error mapping) is one
  coroutine function built once per route (`ServedRoute.unary`). The
  request iterators given to the streaming methods are consumed lazily by the
  handler in the caller's task; response iterators are plain async generators.

Request iterators: for client- and bidi-streaming calls, `requests` is any
async iterator; it ends at the client's half-close and should raise
`RpcError` if the call fails while the handler reads.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from google.protobuf.message import Message

from flare_runtime.auth import AUTHORIZATION_KEY, AuthPlugin, Principal, check_single_credential
from flare_runtime.context import CURRENT_CALL, CallContext
from flare_runtime.errors import RpcError
from flare_runtime.interceptors import (
    ServerInterceptor,
    StreamCallNext,
    UnaryCallNext,
    chain_server_stream,
    chain_server_unary,
)
from flare_runtime.metadata import EMPTY_METADATA, Metadata
from flare_runtime.peer_log import PeerLog
from flare_runtime.routing import (
    AuthRequirement,
    BoundRoute,
    Cardinality,
    Route,
    Router,
    Transport,
    split_wire_id,
)
from flare_runtime.stats import CallMeter, ServerStats
from flare_runtime.status import StatusCode

logger = logging.getLogger("flare_runtime.server")

INTERNAL_MESSAGE = "internal error"
"""The only message a client sees for an unexpected server exception."""


@dataclass(slots=True)
class ConnectionAuth:
    """The outcome of authenticating a connection's opening metadata.

    Exactly one of `principal` (authenticated) and `error` (credentials were
    presented and rejected) is set, or neither (anonymous).
    """

    principal: Principal | None = None
    error: RpcError | None = None


ANONYMOUS = ConnectionAuth()

UNMETERED = CallMeter("", "")
"""The meter of `ServedRoute` entries no transport counts through (`Dispatcher.unary`)."""

UnaryRunner: TypeAlias = Callable[[Message, CallContext, ConnectionAuth | None], Awaitable[Message]]
"""One unary route's whole call, built once per route by the `Dispatcher`: awaiting
``runner(request, context, connection_auth)`` authorizes, runs the interceptors and the
handler, and raises only `RpcError` (or `asyncio.CancelledError`)."""


@dataclass(frozen=True, slots=True)
class ServedRoute(BoundRoute):
    """A route as a `Dispatcher` serves it: the bound route and its precomputed unary call.

    What `Dispatcher.wire_routes` and `Dispatcher.routes` hand to transports:
    a unary call is ``await served.unary(request, context, connection_auth)``
    (the same runner `Dispatcher.unary` uses), one coroutine over the handler.
    """

    unary: UnaryRunner
    """The route's `UnaryRunner`; for a streaming route, one that fails INTERNAL."""
    meter: CallMeter = UNMETERED
    """Where the transport counts each call's end (`CallMeter.ended`): the entries
    `wire_routes` and `routes` hand out have one per route and transport."""


def to_rpc_error(
    exc: BaseException, route: Route[Any, Any] | None = None, peer_log: PeerLog | None = None
) -> RpcError:
    """Map an exception raised by a handler or interceptor to the `RpcError` a client sees.

    Unexpected exceptions are logged here (once) with their traceback, through
    `peer_log` when given (a client decides how often a handler fails on its
    requests, so the line is rate-limited).
    """
    if isinstance(exc, RpcError):
        return exc
    if isinstance(exc, TimeoutError):
        return RpcError(StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")
    if isinstance(exc, NotImplementedError):
        where = route.path if route is not None else "this method"
        return RpcError(StatusCode.UNIMPLEMENTED, f"{where} is not implemented")
    where = route.path if route else "?"
    if peer_log is None:
        logger.error("handler for %s raised", where, exc_info=exc)
    else:
        peer_log.log(logger, logging.ERROR, "handler for %s raised", where, exc_info=exc)
    return RpcError(StatusCode.INTERNAL, INTERNAL_MESSAGE)


class Dispatcher:
    """Runs calls for one server: shared by every transport the server serves.

    Build it once (the `Server` does) from a finished `Router`; it keeps the
    interceptor chains and each unary route's runner precomputed, so
    dispatching a call does a dict lookup and one call.
    """

    def __init__(
        self,
        router: Router,
        *,
        interceptors: Sequence[ServerInterceptor] = (),
        auth: AuthPlugin | None = None,
        peer_log: PeerLog | None = None,
        stats: ServerStats | None = None,
    ) -> None:
        self.router = router
        self.interceptors: tuple[ServerInterceptor, ...] = tuple(interceptors)
        self.auth = auth
        self.peer_log = peer_log if peer_log is not None else PeerLog()
        """Rate-limits the log lines clients can cause (handler failures, here)."""
        self.stats = stats if stats is not None else ServerStats()
        """Where transports count calls (the `CallMeter` of each `ServedRoute`)."""
        self._unary_chains: dict[str, UnaryCallNext] = {}
        self._stream_chains: dict[str, StreamCallNext] = {}
        self._served: dict[str, ServedRoute] = {}
        self._wire_routes: dict[Transport, Mapping[int, ServedRoute]] = {}
        for bound in router.routes():
            self._build_chain(bound)
            self._served[bound.route.path] = self._serve(bound)

    # ----------------------------------------------------------------- lookup

    def wire_routes(self, transport: Transport) -> Mapping[int, ServedRoute]:
        """Wire id → bound route, for the routes served on `transport` (built once, shared).

        What the WebSocket and QUIC endpoints look calls up in: one dict read
        per call, with each route's ``transports`` option already applied.
        """
        table = self._wire_routes.get(transport)
        if table is None:
            table = {
                bound.route.wire_id: bound
                for bound in self.routes(transport)
                if bound.route.wire_id
            }
            self._wire_routes[transport] = table
        return table

    def routes(self, transport: Transport) -> list[ServedRoute]:
        """The routes served on `transport` (their ``transports`` option names it), each
        with its `CallMeter` for `transport`."""
        stats = self.stats
        name = transport.value
        return [
            dataclasses.replace(served, meter=stats.meter(name, served.route.path))
            for served in self._served.values()
            if transport in served.route.options.transports
        ]

    # ----------------------------------------------------------------- auth

    async def authenticate_connection(self, metadata: Metadata, peer: str) -> ConnectionAuth:
        """Authenticate a connection's opening metadata once, at connect.

        Never raises: the error (UNAUTHENTICATED for bad credentials, INTERNAL
        for a bug in the plugin, logged) is kept and reported by each call
        that needs authentication.
        """
        if self.auth is None or AUTHORIZATION_KEY not in metadata:
            return ANONYMOUS
        try:
            check_single_credential(metadata)
            principal = await self.auth.authenticate(metadata, peer)
        except RpcError as error:
            self.stats.connection_auth_failures += 1
            return ConnectionAuth(error=error)
        except Exception as exc:
            # Calls awaiting the connection's auth must get an answer, not
            # this exception (a streaming call would never end).
            self.stats.connection_auth_failures += 1
            return ConnectionAuth(error=to_rpc_error(exc, None, self.peer_log))
        return ConnectionAuth(principal=principal) if principal is not None else ANONYMOUS

    async def authorize(
        self, context: CallContext, connection_auth: ConnectionAuth | None = None
    ) -> None:
        """Set ``context.principal`` and check the route's auth requirement.

        Raises ``RpcError`` UNAUTHENTICATED or PERMISSION_DENIED.
        """
        auth_error: RpcError | None = None
        if connection_auth is not None:
            context.principal = connection_auth.principal
            auth_error = connection_auth.error
        if self.auth is not None and AUTHORIZATION_KEY in context.metadata:
            try:
                check_single_credential(context.metadata)
                context.principal = await self.auth.authenticate(context.metadata, context.peer)
                auth_error = None
            except RpcError as error:
                context.principal = None
                auth_error = error
        options = context.route.options
        if options.auth is AuthRequirement.NONE and not options.scopes:
            return
        principal = context.principal
        if principal is None:
            self.stats.call_auth_failures += 1
            if auth_error is not None:
                raise auth_error
            raise RpcError(StatusCode.UNAUTHENTICATED, f"{context.route.path} needs authentication")
        missing = [scope for scope in options.scopes if scope not in principal.scopes]
        if missing:
            self.stats.call_auth_failures += 1
            raise RpcError(
                StatusCode.PERMISSION_DENIED,
                f"{context.route.path} needs scope {', '.join(missing)}",
            )

    def _needs_authorize(
        self, context: CallContext, connection_auth: ConnectionAuth | None
    ) -> bool:
        # Fast path, taken by most calls: an open route, no per-call
        # credentials, and the context already carries the connection's
        # principal (transports create it so).
        options = context.route.options
        return (
            options.auth is not AuthRequirement.NONE
            or bool(options.scopes)
            or (
                self.auth is not None
                and context.metadata is not EMPTY_METADATA
                and AUTHORIZATION_KEY in context.metadata
            )
            or (connection_auth is not None and context.principal is not connection_auth.principal)
        )

    # ----------------------------------------------------------------- calls

    def unary(
        self,
        bound: BoundRoute,
        request: Message,
        context: CallContext,
        connection_auth: ConnectionAuth | None = None,
    ) -> Awaitable[Message]:
        """Run a unary call of `bound` (a route of this dispatcher's router).

        Await the result for the response; it raises `RpcError`. The call is
        the route's `ServedRoute.unary`, which transports holding a
        `ServedRoute` await directly.
        """
        served = self._served.get(bound.route.path)
        if served is None:  # bound to the router after this dispatcher was built
            served = self._served[bound.route.path] = self._serve(bound)
        return served.unary(request, context, connection_auth)

    def _serve(self, bound: BoundRoute) -> ServedRoute:
        route = bound.route
        if route.cardinality is not Cardinality.UNARY:
            return ServedRoute(route, bound.handler, _not_unary(route))
        call_next: UnaryCallNext = self._unary_chains.get(route.path, bound.handler)
        authorize = self.authorize
        plugin = self.auth
        peer_log = self.peer_log
        # `_needs_authorize`, with the route's part decided here once.
        always = route.options.auth is not AuthRequirement.NONE or bool(route.options.scopes)

        set_current_call = CURRENT_CALL.set

        async def unary(
            request: Message, context: CallContext, connection_auth: ConnectionAuth | None
        ) -> Message:
            set_current_call(context)  # the call's own task (or context copy): no reset
            try:
                if (
                    always
                    or (
                        connection_auth is not None
                        and context.principal is not connection_auth.principal
                    )
                    or (
                        plugin is not None
                        and context.metadata is not EMPTY_METADATA
                        and AUTHORIZATION_KEY in context.metadata
                    )
                ):
                    await authorize(context, connection_auth)
                return await call_next(request, context)
            except Exception as exc:
                raise to_rpc_error(exc, route, peer_log) from None

        return ServedRoute(route, bound.handler, unary)

    async def client_stream(
        self,
        bound: BoundRoute,
        requests: AsyncIterator[Message],
        context: CallContext,
        connection_auth: ConnectionAuth | None = None,
    ) -> Message:
        """Run a client-streaming call; return its response or raise `RpcError`."""
        CURRENT_CALL.set(context)
        try:
            if self._needs_authorize(context, connection_auth):
                await self.authorize(context, connection_auth)
            chain = self._stream_chains.get(context.route.path)
            if chain is None:
                result: Message = await bound.handler(requests, context)
                return result
            response: Message | None = None
            async for item in chain(requests, context):
                if response is not None:
                    raise RpcError(StatusCode.INTERNAL, INTERNAL_MESSAGE)
                response = item
            if response is None:
                raise RpcError(StatusCode.INTERNAL, INTERNAL_MESSAGE)
            return response
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise to_rpc_error(exc, bound.route, self.peer_log) from None

    def server_stream(
        self,
        bound: BoundRoute,
        request: Message,
        context: CallContext,
        connection_auth: ConnectionAuth | None = None,
    ) -> AsyncIterator[Message]:
        """Run a server-streaming call; iterate the result for its responses.

        Iteration raises `RpcError` when the call fails.
        """
        return self._stream(bound, _one(request), context, connection_auth)

    def bidi_stream(
        self,
        bound: BoundRoute,
        requests: AsyncIterator[Message],
        context: CallContext,
        connection_auth: ConnectionAuth | None = None,
    ) -> AsyncIterator[Message]:
        """Run a bidirectional call; iterate the result for its responses."""
        return self._stream(bound, requests, context, connection_auth)

    async def _stream(
        self,
        bound: BoundRoute,
        requests: AsyncIterator[Message],
        context: CallContext,
        connection_auth: ConnectionAuth | None,
    ) -> AsyncIterator[Message]:
        CURRENT_CALL.set(context)
        try:
            if self._needs_authorize(context, connection_auth):
                await self.authorize(context, connection_auth)
            chain = self._stream_chains.get(context.route.path)
            responses = (
                _terminal_stream(bound)(requests, context)
                if chain is None
                else chain(requests, context)
            )
            async for response in responses:
                yield response
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise to_rpc_error(exc, bound.route, self.peer_log) from None

    # ----------------------------------------------------------------- errors

    def wrong_response_error(self, route: Route[Any, Any], response: object) -> RpcError:
        """The error for a handler that returned something other than `route`'s response
        type: logged (rate-limited), INTERNAL to the client on every transport.

        Transports check ``type(response) is route.response_type`` before serializing
        (a protobuf class serializes any message, so the wrong bytes would go out).
        """
        self.peer_log.log(
            logger,
            logging.ERROR,
            "handler for %s returned %s, expected %s",
            route.path,
            type(response).__name__,
            route.response_type.__name__,
        )
        return RpcError(StatusCode.INTERNAL, INTERNAL_MESSAGE)

    @staticmethod
    def unknown_route_error(path_or_wire_id: str | int) -> RpcError:
        """The error for a call to a route this server does not serve (by gRPC path or wire id)."""
        if isinstance(path_or_wire_id, int):
            service_id, route_id = split_wire_id(path_or_wire_id)
            name = f"wire id {service_id}:{route_id}"
        else:
            name = path_or_wire_id
        return RpcError(StatusCode.UNIMPLEMENTED, f"unknown method {name}")

    # ----------------------------------------------------------------- chains

    def _build_chain(self, bound: BoundRoute) -> None:
        if not self.interceptors:
            return
        path = bound.route.path
        if bound.route.cardinality is Cardinality.UNARY:
            self._unary_chains[path] = chain_server_unary(self.interceptors, bound.handler)
        else:
            self._stream_chains[path] = chain_server_stream(
                self.interceptors, _terminal_stream(bound)
            )


def _terminal_stream(bound: BoundRoute) -> StreamCallNext:
    """The handler of a streaming route in the normalized stream shape."""
    handler: Callable[..., Any] = bound.handler
    cardinality = bound.route.cardinality
    if cardinality is Cardinality.BIDI_STREAM:
        return handler
    if cardinality is Cardinality.SERVER_STREAM:

        async def server_stream(
            requests: AsyncIterator[Message], context: CallContext
        ) -> AsyncIterator[Message]:
            request = await _single(requests)
            async for response in handler(request, context):
                yield response

        return server_stream

    async def client_stream(
        requests: AsyncIterator[Message], context: CallContext
    ) -> AsyncIterator[Message]:
        awaitable: Awaitable[Message] = handler(requests, context)
        yield await awaitable

    return client_stream


def _not_unary(route: Route[Any, Any]) -> UnaryRunner:
    async def unary(
        request: Message, context: CallContext, connection_auth: ConnectionAuth | None
    ) -> Message:
        logger.error("%s is a %s route, called as unary", route.path, route.cardinality.value)
        raise RpcError(StatusCode.INTERNAL, INTERNAL_MESSAGE)

    return unary


async def _one(message: Message) -> AsyncIterator[Message]:
    yield message


async def _single(requests: AsyncIterator[Message]) -> Message:
    async for request in requests:
        return request
    raise RpcError(StatusCode.INTERNAL, "the request stream of a server-stream call was empty")
