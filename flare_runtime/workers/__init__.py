"""Many worker processes on one host, one port per transport (``flare serve --workers N``).

Python runs one core per process, and a process holds at most some 20,000
sockets; a host serves more by running one whole server per worker process,
all on the same ports (``SO_REUSEPORT``). docs/cluster.md, "Workers", is the
guide.

* `flare_runtime.workers.supervisor` -- `supervise`: reserves the ports, forks
  the workers, restarts the ones that die, drains them all on SIGTERM/SIGINT.
* `flare_runtime.workers.worker` -- `run_worker`: one worker process (loads
  the target, checks it can be shared, serves, reports to the supervisor).
* `flare_runtime.workers.ports` -- `reserve_port`: the supervisor's hold on a
  shared port (an exclusive claim first: a busy port is refused).

The pieces a server's parts and listeners see live elsewhere:
`flare_runtime.sharing` (a part says why it cannot run in several processes)
and `flare_runtime.server.SharedPorts` (how a worker's listeners bind);
`flare_runtime.transports.quic_workers` keeps QUIC connections on their
worker when a client's address changes.

This package is separate from `flare_runtime.cluster`: workers are how one
host runs many processes, with or without a cluster broker between them; the
cluster is how processes (workers or hosts) exchange events.
"""

from __future__ import annotations
