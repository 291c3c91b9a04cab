"""``flare watch`` against a server whose schema it has never seen (see conftest.py)."""

from __future__ import annotations

import json

from tests.runtime.cli.conftest import Lab


def test_pushes_are_json_lines_decoded_through_reflection(lab: Lab) -> None:
    result = lab.run(
        "watch", lab.urls["ws"], "/unseen.lab.v1.Lab/RingMe", '{"times": 2}', "--count", "2"
    )
    assert result.returncode == 0, result.stderr
    assert [json.loads(line) for line in result.stdout.splitlines()] == [
        {"response": {"items": 2}},
        {"push": "unseen.lab.v1.Bell", "typeId": 9, "message": {"text": "ring 1"}},
        {"push": "unseen.lab.v1.Bell", "typeId": 9, "message": {"text": "ring 2"}},
    ]


def test_a_server_stream_runs_beside_the_pushes(lab: Lab) -> None:
    result = lab.run(
        "watch", lab.urls["ws"], "/unseen.lab.v1.Lab/Count", '{"value": 2}', "--timeout", "3"
    )
    assert result.returncode == 0, result.stderr
    assert [json.loads(line) for line in result.stdout.splitlines()] == [
        {"response": {"value": "1"}},
        {"response": {"value": "2"}},
    ]


def test_a_failing_first_call_ends_the_watch(lab: Lab) -> None:
    result = lab.run("watch", lab.urls["ws"], "/unseen.lab.v1.Lab/Fail", "{}")
    assert result.returncode == 1
    assert result.stderr == "FAILED_PRECONDITION: the lab says no\n"


def test_grpc_has_no_push(lab: Lab) -> None:
    result = lab.run("watch", lab.urls["grpc"])
    assert result.returncode == 2
    assert result.stderr.startswith("flare watch: gRPC has no server push")
