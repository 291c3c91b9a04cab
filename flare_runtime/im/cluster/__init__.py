"""The IM on a cluster: every promise of docs/im.md across nodes (docs/cluster.md).

``ImCore(PostgresStorage(...), cluster=ClusterNode(RedisBroker(...)))`` builds it.

* `flare_runtime.im.cluster.relay` - `ImCluster`: the IM's side of one node
  (following conversations by interest, the sequencer's gaps, kicks, presence,
  ``SyncRequired`` after a gap).
* `flare_runtime.im.cluster.registry` - `ClusterRegistry`: sessions, node leases
  and presence in PostgreSQL.
* `flare_runtime.im.cluster.envelope` - the bytes IM events travel as between nodes.
"""

from __future__ import annotations

from flare_runtime.im.cluster.registry import ClusterRegistry, RegisteredSession
from flare_runtime.im.cluster.relay import ClusterSettings, ImCluster

__all__ = ["ClusterRegistry", "ClusterSettings", "ImCluster", "RegisteredSession"]
