"""The one read of asyncio's internals Flare makes: can the loop be seen going idle?

The QUIC link sends the tail of its output (less than a datagram) once the
event loop has nothing else ready to run: the rest of a burst of answers is
then written and leaves in the same datagrams (docs/transports/quic.md,
"Output batching"). asyncio has no public way to ask whether callbacks are
ready; the stdlib loop keeps them in ``loop._ready``, a deque. Every signal a
public API offers measured worse: waiting only while the link itself keeps
being written to sent about twice the datagrams per message and lost about a
quarter of the throughput (bench/RESULTS.md, 2026-12-07).

So the read is here, once; ``tests/runtime/transports/test_asyncio_shim.py``
checks it against the running loop and fails when a Python release changes
it. Loops without such a queue (uvloop) get None, and the link waits a fixed
number of iterations instead (`LinkTuning.blind_transmit_hops`).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Sized


def ready_queue(loop: asyncio.AbstractEventLoop) -> Sized | None:
    """`loop`'s queue of callbacks ready to run (truthy while any is), or None if unseen.

    Reads the stdlib loop's private ``_ready`` deque; returns None for a loop
    without one, or with something else under that name.
    """
    ready = getattr(loop, "_ready", None)
    return ready if isinstance(ready, collections.deque) else None
