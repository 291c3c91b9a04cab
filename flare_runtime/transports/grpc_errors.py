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
from google.protobuf.message import Message

from flare_runtime.details import pack_details, unpack_details
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
    """Serialize `error` as a ``google.rpc.Status`` for the details trailer.

    The same bytes the Flare wire protocol carries (`flare_runtime.details`).
    """
    return pack_details(error.code, error.message, error.details)


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
            details = unpack_details(value)
            break
    return RpcError(from_grpc_code(code), message or "", details)


def rpc_error_from_aio(error: grpc.aio.AioRpcError) -> RpcError:
    """Translate grpcio's exception into Flare's."""
    return rpc_error_from_status(error.code(), error.details(), error.trailing_metadata())
