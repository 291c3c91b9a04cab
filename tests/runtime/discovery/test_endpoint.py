"""`Endpoint`: its JSON form, and what it refuses."""

from __future__ import annotations

import pytest

from flare_runtime.discovery.endpoint import Endpoint, InvalidEndpointError, instance_of


def test_round_trip() -> None:
    endpoint = Endpoint(
        "pkg.Service",
        "10.0.0.7:8080",
        ("ws://10.0.0.7:8080", "grpc://10.0.0.7:50051"),
        zone="eu-1a",
        region="eu-1",
        load=3.0,
        labels={"version": "1.2"},
    )
    assert Endpoint.from_json("pkg.Service", "10.0.0.7:8080", endpoint.to_json()) == endpoint


def test_url_for_prefers_the_schemes_given() -> None:
    endpoint = Endpoint("s", "h:1", ("ws://h:1", "grpc://h:2"))
    assert endpoint.url_for(()) == "ws://h:1"
    assert endpoint.url_for(("grpc", "ws")) == "grpc://h:2"
    assert endpoint.url_for(("quic",)) is None


def test_instance_of() -> None:
    assert instance_of("ws://127.0.0.1:8080/x") == "127.0.0.1:8080"
    assert instance_of("grpc://[::1]:50051") == "[::1]:50051"


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"\xff\xfe",
        b"[1, 2]",
        b"{}",
        b'{"urls": []}',
        b'{"urls": [1]}',
        b'{"urls": ["no-scheme"]}',
        b'{"urls": ["ws://"]}',
        b'{"urls": ["ws://h:99999"]}',
        b'{"urls": ["ws://h:1"], "load": "high"}',
        b'{"urls": ["ws://h:1"], "load": true}',
        b'{"urls": ["ws://h:1"], "load": 1e999}',
        b'{"urls": ["ws://h:1"], "zone": 5}',
        b'{"urls": ["ws://h:1"], "labels": {"a": 1}}',
        b'{"urls": ["ws://h:1"]' + b" " * 20_000 + b"}",
        b"[" * 100_000,
    ],
)
def test_garbage_is_refused(data: bytes) -> None:
    with pytest.raises(InvalidEndpointError):
        Endpoint.from_json("s", "h:1", data)
