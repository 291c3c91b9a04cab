"""Status codes: exactly gRPC's seventeen codes, with gRPC's numbers.

Every transport carries these numbers unchanged, so a status set by a handler
arrives as the same `StatusCode` on every client (see docs/runtime.md).
"""

from __future__ import annotations

import enum


class StatusCode(enum.IntEnum):
    """The outcome of a call; values equal gRPC's `grpc.StatusCode` numbers."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16
