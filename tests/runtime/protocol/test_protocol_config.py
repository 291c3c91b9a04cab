"""ProtocolConfig: only settings the wire can carry and the peer must accept."""

from __future__ import annotations

import pytest

from flare_runtime.protocol import ProtocolConfig, Settings
from flare_runtime.protocol.config import MIN_INITIAL_WINDOW_SIZE, MIN_MAX_FRAME_SIZE


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (lambda: Settings(initial_window_size=MIN_INITIAL_WINDOW_SIZE - 1), "initial_window_size"),
        (lambda: Settings(initial_window_size=1 << 31), "31/32-bit"),
        (lambda: Settings(max_frame_size=MIN_MAX_FRAME_SIZE - 1), "max_frame_size"),
        (lambda: Settings(max_message_size=0), "max_message_size"),
        (lambda: Settings(max_concurrent_calls=1 << 32), "max_concurrent_calls"),
        (lambda: Settings(max_metadata_size=-1), "max_metadata_size"),
    ],
)
def test_settings_outside_the_wire_ranges_are_rejected(config: object, message: str) -> None:
    assert callable(config)
    with pytest.raises(ValueError, match=message):
        ProtocolConfig(settings=config())


def test_local_policy_is_validated_too() -> None:
    with pytest.raises(ValueError, match="window_update_ratio"):
        ProtocolConfig(window_update_ratio=0.0)
    with pytest.raises(ValueError, match="max_buffered_input"):
        ProtocolConfig(max_buffered_input=0)
    with pytest.raises(ValueError, match="flush_batch"):
        ProtocolConfig(flush_batch=0)


def test_defaults_are_valid_and_documented_values() -> None:
    config = ProtocolConfig()
    assert config.settings.initial_window_size == 262_144
    assert config.settings.max_message_size == 4 * 1024 * 1024
    assert config.keepalive_interval == 20.0
