"""Flare's error model on gRPC: status codes and rich error details.

`StatusCode` values equal gRPC's, so the mapping is a table lookup both ways.
An `RpcError`'s details travel the way every gRPC implementation expects them:
a serialized ``google.rpc.Status`` (code, message, details packed into
``google.protobuf.Any``) in the ``grpc-status-details-bin`` trailer, which is
what `grpc_status.rpc_status.from_call` and grpc-js read.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from google.protobuf import any_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message
from google.rpc import status_pb2  # type: ignore[import-untyped]

from flare_runtime.errors import RpcError
from flare_runtime.metadata import MetadataValue
from flare_runtime.status import StatusCode

STATUS_DETAILS_KEY = "grpc-status-details-bin"
"""The trailer carrying a serialized ``google.rpc.Status``."""

_TO_GRPC: dict[StatusCode, grpc.StatusCode] = {
    StatusCode(code.value[0]): code for code in grpc.StatusCode
}
_FROM_GRPC: dict[grpc.StatusCode, StatusCode] = {
    grpc_code: code for code, grpc_code in _TO_GRPC.items()
}


def to_grpc_code(code: StatusCode) -> grpc.StatusCode:
    """The `grpc.StatusCode` with the same number as `code`."""
    return _TO_GRPC[code]


def from_grpc_code(code: grpc.StatusCode | None) -> StatusCode:
    """The Flare `StatusCode` with the same number as `code` (None → UNKNOWN)."""
    if code is None:
        return StatusCode.UNKNOWN
    return _FROM_GRPC[code]


def status_details_bin(error: RpcError) -> bytes:
    """Serialize `error` as a ``google.rpc.Status`` for the details trailer."""
    status = status_pb2.Status(code=int(error.code), message=error.message)
    for detail in error.details:
        packed = status.details.add()
        if isinstance(detail, any_pb2.Any):
            packed.CopyFrom(detail)
        else:
            packed.Pack(detail)
    encoded: bytes = status.SerializeToString()
    return encoded


def unpack_details(packed: Iterable[any_pb2.Any]) -> tuple[Message, ...]:
    """Unpack ``google.rpc.Status.details`` into message objects.

    A detail whose type is not in the default descriptor pool (the client has
    not imported its generated module) stays a `google.protobuf.Any`, so no
    information is lost.
    """
    pool = descriptor_pool.Default()
    details: list[Message] = []
    for item in packed:
        try:
            descriptor = pool.FindMessageTypeByName(item.TypeName())
        except KeyError:
            details.append(item)
            continue
        message = message_factory.GetMessageClass(descriptor)()
        if item.Unpack(message):
            details.append(message)
        else:
            details.append(item)
    return tuple(details)


def rpc_error_from_status(
    code: grpc.StatusCode | None,
    message: str | None,
    trailers: Iterable[tuple[str, MetadataValue]] | None,
) -> RpcError:
    """Build the `RpcError` a gRPC call ended with.

    When the trailers hold a valid ``google.rpc.Status`` its details are used;
    the code and message always come from the gRPC status itself (a peer that
    sends a Status proto contradicting its own grpc-status is not trusted).
    """
    details: tuple[Message, ...] = ()
    for key, value in trailers or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            try:
                details = unpack_details(status_pb2.Status.FromString(value).details)
            except DecodeError:
                details = ()
            break
    return RpcError(from_grpc_code(code), message or "", details)


def rpc_error_from_aio(error: grpc.aio.AioRpcError) -> RpcError:
    """Translate grpcio's exception into Flare's."""
    return rpc_error_from_status(error.code(), error.details(), error.trailing_metadata())
