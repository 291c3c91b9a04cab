"""``flare list`` against a server whose schema it has never seen (see conftest.py)."""

from __future__ import annotations

import pytest

from flare_runtime.transports.quic_certs import CertificateFiles
from tests.runtime.cli.conftest import Lab

LAB_METHODS = ["Echo", "Count", "Sum", "Chat", "Fail", "RingMe", "OnlyGrpc"]


def test_list_over_websocket_names_the_services(lab: Lab) -> None:
    result = lab.run("list", lab.urls["ws"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["flare.reflection.v1.Reflection", "unseen.lab.v1.Lab"]


def test_list_over_grpc_names_the_services_grpc_reflection_lists(lab: Lab) -> None:
    result = lab.run("list", lab.urls["grpc"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
        "unseen.lab.v1.Lab",
    ]


@pytest.mark.parametrize("scheme", ["ws", "grpc"])
def test_list_a_service_names_its_methods(lab: Lab, scheme: str) -> None:
    result = lab.run("list", lab.urls[scheme], "unseen.lab.v1.Lab")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"unseen.lab.v1.Lab.{name}" for name in LAB_METHODS]


def test_long_listing_shows_ids_cardinalities_and_push_types(lab: Lab) -> None:
    services = lab.run("list", lab.urls["ws"], "-l").stdout.splitlines()
    assert [line.split() for line in services] == [
        ["flare.reflection.v1.Reflection", "service", "65280"],
        ["unseen.lab.v1.Lab", "service", "77"],
        ["push", "9", "unseen.lab.v1.Bell"],
    ]
    methods = lab.run("list", lab.urls["ws"], "unseen.lab.v1.Lab", "-l").stdout.splitlines()
    assert [line.split() for line in methods][:4] == [
        ["unseen.lab.v1.Lab.Echo", "unary", "77:1"],
        ["unseen.lab.v1.Lab.Count", "server_stream", "77:2"],
        ["unseen.lab.v1.Lab.Sum", "client_stream", "77:3"],
        ["unseen.lab.v1.Lab.Chat", "bidi_stream", "77:4"],
    ]


def test_an_unknown_service_is_one_line_and_exit_2(lab: Lab) -> None:
    result = lab.run("list", lab.urls["ws"], "unseen.lab.v1.Nothing")
    assert result.returncode == 2
    assert result.stderr == "flare list: this server serves no symbol 'unseen.lab.v1.Nothing'\n"


def test_list_over_quic(lab_quic: tuple[Lab, CertificateFiles]) -> None:
    lab, certificate = lab_quic
    result = lab.run("list", lab.urls["quic"], "--ca-cert", str(certificate.certificate))
    assert result.stdout.splitlines() == ["flare.reflection.v1.Reflection", "unseen.lab.v1.Lab"]
