"""`flare_runtime.sharing`: which parts say they cannot run in several worker processes.

The runtime's own parts answer for real: the in-process cluster broker and the
IM on SQLite cannot be shared; Redis can. `Server.sharing_problems` asks every
service, the auth plugin, the interceptors and ``parts``.
"""

from __future__ import annotations

from pathlib import Path

from flare_runtime.cluster import ClusterNode
from flare_runtime.cluster.redis_broker import RedisBroker
from flare_runtime.im.core import ImCore
from flare_runtime.im.service import ImService
from flare_runtime.im.storage import KeyRing, SqliteStorage
from flare_runtime.im.storage.postgres import PostgresStorage
from flare_runtime.server import Server
from flare_runtime.sharing import sharing_problems
from flare_runtime.testing.service import SERVICE, ConformanceService

KEYS = KeyRing({1: bytes(32)}, 1)


class ProcessLocal:
    """A part that cannot be shared."""

    def __init__(self, why: str) -> None:
        self.why = why

    def process_sharing_problem(self) -> str:
        return self.why


def test_objects_without_an_answer_or_answering_none_can_be_shared() -> None:
    class Fine:
        def process_sharing_problem(self) -> None:
            return None

    assert sharing_problems(object(), Fine(), None) == []


def test_answers_come_in_order_once_each() -> None:
    assert sharing_problems(ProcessLocal("b"), ProcessLocal("a"), ProcessLocal("b")) == ["b", "a"]


def test_the_server_asks_its_services_auth_interceptors_and_parts() -> None:
    class LocalService(ConformanceService):
        def process_sharing_problem(self) -> str:
            return "service"

    class LocalAuth(ProcessLocal):
        async def authenticate(self, metadata: object, peer: str) -> None:
            return None

    server = Server(
        [(SERVICE, LocalService())],
        auth=LocalAuth("auth"),  # type: ignore[arg-type]
        interceptors=[ProcessLocal("interceptor")],  # type: ignore[list-item]
        parts=[ProcessLocal("part"), object()],
    )
    assert server.sharing_problems() == ["service", "auth", "interceptor", "part"]
    assert Server([(SERVICE, ConformanceService())]).sharing_problems() == []


def test_a_cluster_node_can_be_shared_on_redis_not_on_the_in_process_broker() -> None:
    assert sharing_problems(ClusterNode()) == [
        "ClusterNode: the in-process MemoryBroker links only the nodes of one process; "
        "with several workers use a broker they all reach (RedisBroker)"
    ]
    assert sharing_problems(ClusterNode(RedisBroker("redis://127.0.0.1:1/0"))) == []


def test_the_im_on_sqlite_cannot_be_shared(tmp_path: Path) -> None:
    database = tmp_path / "im.db"
    service = ImService(ImCore(SqliteStorage(database, KEYS)))
    assert sharing_problems(service) == [
        f"SqliteStorage ({database}): one SQLite file cannot be shared by worker "
        "processes; with several workers use PostgresStorage"
    ]


def test_the_im_on_postgres_without_a_cluster_node_is_one_process_for_live_delivery() -> None:
    core = ImCore(PostgresStorage("postgresql://flare:flare@127.0.0.1:55432/flare_test", KEYS))
    assert sharing_problems(ImService(core)) == [
        "ImCore without a cluster node delivers live events only to the sessions of its own "
        "process; with several workers run it on a cluster (RedisBroker)"
    ]
