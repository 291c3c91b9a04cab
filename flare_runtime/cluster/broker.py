"""The `Broker` interface: one node's link to the bus that carries events between nodes.

A broker moves opaque bytes on named channels and knows nothing of topics,
users or connections (`ClusterNode` maps those onto channels). Backends:
`flare_runtime.cluster.memory` (in-process, the default) and
`flare_runtime.cluster.redis_broker` (Redis pub/sub).

Contract, for every backend:

* **Interest.** The broker receives a channel's messages only between
  `subscribe(channel)` and `unsubscribe(channel)`; the node calls them on its
  first and last local subscriber, so the bus itself routes by interest.
  Both return at once; the broker applies them in call order.
  `wait_subscribed(channel)` returns once the channel is subscribed at the bus
  (from then on, a message published to it reaches this node).
* **Publish** never blocks and never raises for an outage: it queues the
  message and returns True, or returns False when it dropped it (the link is
  down). Messages published by one node to one channel arrive in publish
  order at every subscribed node. A broker may or may not hand a node its own
  publishes back; the node drops them.
* **Link state.** The broker reports to its `BrokerListener`: `link_lost` when
  the link to the bus fails (messages may be lost from then on, both ways),
  `publishes_lost` for channels whose queued or unacknowledged messages were
  dropped with the link, and `link_restored` once the link is back and every
  channel is subscribed again. Between `link_lost` and `link_restored` nothing
  is received. A broker reconnects by itself.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Iterable
from typing import Protocol


class LinkState(enum.Enum):
    """Whether a node's link to the bus carries messages."""

    UP = "up"
    DOWN = "down"


class BrokerListener(Protocol):
    """What a broker reports to its node (all called on the event loop)."""

    def message_received(self, channel: bytes, data: bytes) -> None:
        """A message published on `channel`, which this node subscribes to."""

    def link_lost(self, reason: str) -> None:
        """The link failed: from now on messages may be lost until `link_restored`."""

    def publishes_lost(self, channels: Iterable[bytes]) -> None:
        """Messages this node published on `channels` may not have reached the bus."""

    def link_restored(self) -> None:
        """The link is back and every wanted channel is subscribed again."""


class Broker(abc.ABC):
    """One node's link to the bus (see the module docstring for the contract)."""

    @property
    @abc.abstractmethod
    def state(self) -> LinkState:
        """UP while messages flow both ways."""

    @abc.abstractmethod
    async def start(self, listener: BrokerListener) -> None:
        """Start the link (and keep it up, reconnecting) reporting to `listener`.

        Returns at once; the link is UP when `listener.link_restored` is called.
        """

    @abc.abstractmethod
    def subscribe(self, channel: bytes) -> None:
        """Start receiving `channel`'s messages (applied in the background)."""

    @abc.abstractmethod
    def unsubscribe(self, channel: bytes) -> None:
        """Stop receiving `channel`'s messages."""

    @abc.abstractmethod
    async def wait_subscribed(self, channel: bytes) -> None:
        """Return once `channel` is subscribed at the bus (waits across outages)."""

    @abc.abstractmethod
    def publish(self, channel: bytes, data: bytes) -> bool:
        """Send `data` to every node subscribed to `channel`; False: dropped (link down)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """End the link; nothing is reported to the listener afterwards."""
