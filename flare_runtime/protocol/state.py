"""The per-call state machine, as one transition table (docs/wire-format.md §5).

Both endpoints track every call with the same table: a client checks what it
sends (a forbidden step raises `LocalProtocolError`) and what it receives (a
forbidden step is the peer's fault, `RemoteProtocolError`); a server the same
from its side. The cardinality of a route is not a protocol matter: the
protocol allows any number of messages each way, and the runtime enforces
unary/streaming shapes.

States (a call that reaches CLOSED is forgotten)::

    OPEN                    client may send; server has sent nothing yet
    OPEN_RESPONDING         client may send; server has sent headers or a message
    HALF_CLOSED             client has finished; server has sent nothing yet
    HALF_CLOSED_RESPONDING  client has finished; server is responding
    CLOSED                  END_CALL or CANCEL (or a local failure) ended it
"""

from __future__ import annotations

import enum
from typing import Final


class CallState(enum.IntEnum):
    """Where a call stands; values index `TRANSITIONS`."""

    OPEN = 0
    OPEN_RESPONDING = 1
    HALF_CLOSED = 2
    HALF_CLOSED_RESPONDING = 3
    CLOSED = 4


class CallInput(enum.IntEnum):
    """Things that happen to a call; values index a row of `TRANSITIONS`."""

    CLIENT_MESSAGE = 0
    CLIENT_MESSAGE_END = 1  # MESSAGE with END_STREAM
    CLIENT_HALF_CLOSE = 2
    CLIENT_CANCEL = 3
    SERVER_HEADERS = 4
    SERVER_MESSAGE = 5
    SERVER_END = 6
    LOCAL_FAILURE = 7  # deadline passed, a limit broken, GOAWAY exclusion


INVALID: Final = -1
"""Table entry for a step the protocol forbids."""

_O = CallState.OPEN
_OR = CallState.OPEN_RESPONDING
_H = CallState.HALF_CLOSED
_HR = CallState.HALF_CLOSED_RESPONDING
_C = CallState.CLOSED
_X = INVALID

# Columns follow CallInput:
#   c-msg  c-end  c-half  c-cancel  s-headers  s-msg  s-end  local-fail
TRANSITIONS: Final[tuple[tuple[int, ...], ...]] = (
    (_O, _H, _H, _C, _OR, _OR, _C, _C),  # OPEN
    (_OR, _HR, _HR, _C, _X, _OR, _C, _C),  # OPEN_RESPONDING
    (_X, _X, _X, _C, _HR, _HR, _C, _C),  # HALF_CLOSED
    (_X, _X, _X, _C, _X, _HR, _C, _C),  # HALF_CLOSED_RESPONDING
    (_X, _X, _X, _X, _X, _X, _X, _X),  # CLOSED: calls are forgotten when they close
)
