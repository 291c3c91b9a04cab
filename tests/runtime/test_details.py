"""Error details packed as google.rpc.Status."""

from __future__ import annotations

from google.protobuf import any_pb2, wrappers_pb2

from flare_runtime.details import pack_details, unpack_details
from flare_runtime.status import StatusCode


def test_round_trip_and_unknown_types() -> None:
    details = (wrappers_pb2.StringValue(value="why"), wrappers_pb2.Int64Value(value=7))
    packed = pack_details(StatusCode.ABORTED, "m", details)
    assert unpack_details(packed) == details
    assert pack_details(StatusCode.ABORTED, "m", ()) == b""
    assert unpack_details(b"") == ()
    assert unpack_details(b"\xff\xff\xff") == ()


def test_unknown_detail_type_stays_any() -> None:
    from google.rpc import status_pb2  # type: ignore[import-untyped]

    status = status_pb2.Status(code=10)
    status.details.append(any_pb2.Any(type_url="type.example/unknown.Type", value=b"\x08\x01"))
    (detail,) = unpack_details(status.SerializeToString())
    assert isinstance(detail, any_pb2.Any)
