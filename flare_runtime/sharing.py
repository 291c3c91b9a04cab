"""Whether a server's parts work when the server runs as several worker processes.

``flare serve app:server --workers N`` runs N copies of the server, one per
process, side by side on the same ports (docs/cluster.md, "Workers"). Most
parts are fine with that; some are not: an in-process broker links only the
nodes of its own process, and one SQLite file cannot be written by N
processes at once. Such a part says so by answering one method::

    class SqliteStorage:
        def process_sharing_problem(self) -> str | None:
            return f"SqliteStorage ({self.path}): one SQLite file ... use PostgresStorage"

`process_sharing_problem()` returns None when N copies of the object, one in
each worker process, work together, or one line saying why they do not and
what to use instead. An object that holds other parts answers for them too
(`sharing_problems` of what it holds). Objects without the method are taken
to be fine. `flare_runtime.server.Server.sharing_problems` asks every
service, the auth plugin, every interceptor and the server's ``parts``;
``flare serve --workers N`` (N > 1) refuses to start when any answers.
"""

from __future__ import annotations

from typing import Protocol

METHOD = "process_sharing_problem"
"""The name of the method a part answers (see the module docstring)."""


class ProcessShared(Protocol):
    """An object that says whether copies of it can run in several worker processes."""

    def process_sharing_problem(self) -> str | None:
        """None when one copy per worker process works; else one line: why not, what to use."""


def sharing_problems(*parts: object) -> list[str]:
    """What `parts` answer (in order, repeats dropped); empty when all can be shared."""
    problems: list[str] = []
    for part in parts:
        answer = getattr(part, METHOD, None)
        problem = answer() if callable(answer) else None
        if problem and problem not in problems:
            problems.append(problem)
    return problems
