"""The in-process bus: the default broker for one worker, nothing to install.

::

    node = ClusterNode()                        # its own private MemoryBus

    bus = MemoryBus()                           # several nodes in one process (tests)
    nodes = [ClusterNode(MemoryBroker(bus)) for _ in range(3)]

`MemoryBus` routes by interest like a real bus: a message published on a
channel is handed only to the brokers subscribed to it at that moment, never
back to its publisher, each on a later turn of the event loop (as a network
bus would), in publish order. Its link never fails, so it never reports a gap.
All its nodes must run on one event loop.
"""

from __future__ import annotations

import asyncio

from flare_runtime.cluster.broker import Broker, BrokerListener, LinkState


class MemoryBus:
    """Channels shared by the `MemoryBroker`s of one process."""

    def __init__(self) -> None:
        self._subscribers: dict[bytes, dict[MemoryBroker, None]] = {}

    def subscribers(self, channel: bytes) -> int:
        """How many brokers receive `channel` now."""
        return len(self._subscribers.get(channel, ()))

    def _join(self, channel: bytes, broker: MemoryBroker) -> None:
        self._subscribers.setdefault(channel, {})[broker] = None

    def _leave(self, channel: bytes, broker: MemoryBroker) -> None:
        brokers = self._subscribers.get(channel)
        if brokers is not None:
            brokers.pop(broker, None)
            if not brokers:
                del self._subscribers[channel]

    def _publish(self, channel: bytes, data: bytes, sender: MemoryBroker) -> None:
        brokers = self._subscribers.get(channel)
        if not brokers:
            return
        call_soon = asyncio.get_running_loop().call_soon
        for broker in brokers:
            if broker is not sender:
                call_soon(broker._receive, channel, data)


class MemoryBroker(Broker):
    """One node's link to a `MemoryBus` (a private one when none is given)."""

    def __init__(self, bus: MemoryBus | None = None) -> None:
        self.bus = bus if bus is not None else MemoryBus()
        self._listener: BrokerListener | None = None
        self._channels: set[bytes] = set()
        self._closed = False

    @property
    def state(self) -> LinkState:
        return LinkState.DOWN if self._closed else LinkState.UP

    def process_sharing_problem(self) -> str:
        """Never shareable (`flare_runtime.sharing`): a `MemoryBus` lives in one process."""
        return (
            "ClusterNode: the in-process MemoryBroker links only the nodes of one process; "
            "with several workers use a broker they all reach (RedisBroker)"
        )

    async def start(self, listener: BrokerListener) -> None:
        self._listener = listener
        for channel in self._channels:
            self.bus._join(channel, self)
        listener.link_restored()

    def subscribe(self, channel: bytes) -> None:
        self._channels.add(channel)
        if self._listener is not None and not self._closed:
            self.bus._join(channel, self)

    def unsubscribe(self, channel: bytes) -> None:
        self._channels.discard(channel)
        self.bus._leave(channel, self)

    async def wait_subscribed(self, channel: bytes) -> None:
        # Subscribing takes effect at once; a channel nobody subscribed is
        # waited for by the node only after it called `subscribe`.
        return

    def publish(self, channel: bytes, data: bytes) -> bool:
        if self._closed:
            return False
        self.bus._publish(channel, data, self)
        return True

    def _receive(self, channel: bytes, data: bytes) -> None:
        listener = self._listener
        if listener is not None and not self._closed and channel in self._channels:
            listener.message_received(channel, data)

    async def close(self) -> None:
        self._closed = True
        for channel in self._channels:
            self.bus._leave(channel, self)
        self._listener = None
