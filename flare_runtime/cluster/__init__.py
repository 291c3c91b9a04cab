"""Flare as a cluster: publish and subscribe across processes and hosts (docs/cluster.md).

* `flare_runtime.cluster.node` - `ClusterNode`: this process's place in the
  cluster; publish to a topic, a user or one connection anywhere; subscribe
  connections and in-process callbacks by interest; gaps reported, never silent.
* `flare_runtime.cluster.broker` - the `Broker` interface every bus implements.
* `flare_runtime.cluster.memory` - `MemoryBus` / `MemoryBroker`: in-process,
  the default for one worker, nothing to install.
* `flare_runtime.cluster.redis_broker` - `RedisBroker`: Redis pub/sub
  (``pip install 'flare-rpc[redis]'``; imported only when used).
* `flare_runtime.cluster.envelope` - the bytes an event travels as (sans-I/O).
"""

from __future__ import annotations

from flare_runtime.cluster.broker import Broker, LinkState
from flare_runtime.cluster.memory import MemoryBroker, MemoryBus
from flare_runtime.cluster.node import (
    ClusterEvent,
    ClusterNode,
    ClusterStats,
    ConnectionAddress,
    LinkChanged,
    MemberChanged,
    Subscription,
)

__all__ = [
    "Broker",
    "ClusterEvent",
    "ClusterNode",
    "ClusterStats",
    "ConnectionAddress",
    "LinkChanged",
    "LinkState",
    "MemberChanged",
    "MemoryBroker",
    "MemoryBus",
    "Subscription",
]
