"""Error details on the Flare wire: a serialized ``google.rpc.Status``.

END_CALL carries opaque details bytes (docs/wire-format.md); the runtime
fills them with ``google.rpc.Status(code, message, details=[Any...])``, the
same bytes gRPC carries in ``grpc-status-details-bin``, so an error's details
look the same on every transport.
"""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf import any_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message
from google.rpc import status_pb2  # type: ignore[import-untyped]

from flare_runtime.status import StatusCode


def pack_details(code: StatusCode, message: str, details: Sequence[Message]) -> bytes:
    """Serialize `details` (empty → b"", nothing on the wire)."""
    if not details:
        return b""
    status = status_pb2.Status(code=int(code), message=message)
    for detail in details:
        packed = any_pb2.Any()
        packed.Pack(detail)
        status.details.append(packed)
    data: bytes = status.SerializeToString()
    return data


def unpack_details(data: bytes) -> tuple[Message, ...]:
    """Decode details bytes back into messages.

    A detail whose type is not known to this process stays a
    ``google.protobuf.Any``; undecodable bytes give no details.
    """
    if not data:
        return ()
    status = status_pb2.Status()
    try:
        status.ParseFromString(data)
    except DecodeError:
        return ()
    out: list[Message] = []
    pool = descriptor_pool.Default()
    for packed in status.details:
        try:
            descriptor = pool.FindMessageTypeByName(packed.TypeName())
        except KeyError:
            out.append(packed)
            continue
        message = message_factory.GetMessageClass(descriptor)()
        if packed.Unpack(message):
            out.append(message)
        else:
            out.append(packed)
    return tuple(out)
