"""Hostile input to the sans-I/O Flare protocol core (docs/wire-format.md), no sockets.

Each test is one row of the hostile-input catalogue: its docstring states the
input and the promised outcome (docs/security/wire.md links here).
"""

from __future__ import annotations

import pytest

from flare_runtime.protocol import (
    CLIENT,
    SERVER,
    CloseCode,
    Connection,
    ConnectionClosed,
    HandshakeCompleted,
    ProtocolConfig,
    Role,
)
from flare_runtime.protocol.frames import SettingId, encode_hello

QUIET = ProtocolConfig(keepalive_interval=None)

# Every HELLO setting of docs/wire-format.md §4 with the edges of its range:
# (setting, smallest valid, largest valid, values out of range).
SETTING_RANGES = [
    (SettingId.MAX_FRAME_SIZE, 16_384, 2**32 - 1, [0, 16_383]),
    (SettingId.MAX_MESSAGE_SIZE, 1, 2**32 - 1, [0]),
    (SettingId.MAX_CONCURRENT_CALLS, 1, 2**32 - 1, [0]),
    (SettingId.INITIAL_WINDOW_SIZE, 65_536, 2**31 - 1, [0, 65_535, 2**31, 2**32 - 1]),
    (SettingId.MAX_METADATA_SIZE, 1, 2**32 - 1, [0]),
    (SettingId.COMPACT_CALLS, 0, 1, [2, 255, 2**32 - 1]),
]


def _hello_outcome(role: Role, settings: list[tuple[int, int]]) -> object:
    """What `role` reports after receiving a HELLO announcing `settings` (a client's
    view of a server HELLO, or a server's of a client HELLO)."""
    connection = Connection(role, QUIET)
    connection.data_to_send()
    connection.receive_data(encode_hello(1, 1, settings), 0.0)
    return connection.events_received()[-1]


def test_every_hello_setting_is_covered() -> None:
    """Input: none. Outcome: the table above names every setting id the protocol defines,
    so a new setting cannot ship without its out-of-range row."""
    assert {row[0] for row in SETTING_RANGES} == set(SettingId)


@pytest.mark.parametrize("role", [CLIENT, SERVER], ids=["server-hello", "client-hello"])
@pytest.mark.parametrize(
    ("setting", "value"),
    [(row[0], value) for row in SETTING_RANGES for value in row[3]],
    ids=lambda item: item.name if isinstance(item, SettingId) else str(item),
)
def test_hello_setting_out_of_range_is_a_protocol_error(
    role: Role, setting: SettingId, value: int
) -> None:
    """Input: a HELLO announcing one setting outside its range of §4 (e.g. COMPACT_CALLS=2,
    INITIAL_WINDOW_SIZE=65535). Outcome: the receiver closes with PROTOCOL_ERROR naming the
    setting; no handshake completes."""
    event = _hello_outcome(role, [(setting, value)])
    assert isinstance(event, ConnectionClosed)
    assert event.code is CloseCode.PROTOCOL_ERROR
    assert setting.name in event.reason


@pytest.mark.parametrize("role", [CLIENT, SERVER], ids=["server-hello", "client-hello"])
@pytest.mark.parametrize(
    ("setting", "value"),
    [(row[0], value) for row in SETTING_RANGES for value in row[1:3]],
    ids=lambda item: item.name if isinstance(item, SettingId) else str(item),
)
def test_hello_setting_at_the_edges_of_its_range_is_accepted(
    role: Role, setting: SettingId, value: int
) -> None:
    """Input: a HELLO announcing a setting at either edge of its range. Outcome: the
    handshake completes with exactly that value (the out-of-range rows are not
    refusing everything)."""
    event = _hello_outcome(role, [(setting, value)])
    assert isinstance(event, HandshakeCompleted)
    announced = getattr(event.peer_settings, setting.name.lower())
    assert int(announced) == value


@pytest.mark.parametrize("role", [CLIENT, SERVER], ids=["server-hello", "client-hello"])
def test_hello_announcing_a_setting_twice_is_a_protocol_error(role: Role) -> None:
    """Input: a HELLO announcing COMPACT_CALLS twice (0 then 1). Outcome: PROTOCOL_ERROR
    (§4: a setting appears at most once); neither value is picked."""
    event = _hello_outcome(role, [(SettingId.COMPACT_CALLS, 0), (SettingId.COMPACT_CALLS, 1)])
    assert isinstance(event, ConnectionClosed)
    assert event.code is CloseCode.PROTOCOL_ERROR
    assert "COMPACT_CALLS announced twice" in event.reason
