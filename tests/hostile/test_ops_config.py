"""Hostile input to ``flare serve``'s configuration, one test per row.

The promise: exit status 2 and one line on stderr naming the key and where its
value came from (file, environment variable, flag), never a traceback, and
nothing served.
"""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest

from flare_runtime.testing.operated import APP, FLARE, environment


def serve(tmp_path: Path, file: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "flare.toml").write_text(file)
    (tmp_path / "opsapp.py").write_text(APP)
    return subprocess.run(
        [FLARE, "serve", "opsapp:services", "--ws", "127.0.0.1:0", *args],
        cwd=tmp_path,
        env=environment(env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def one_line_error(result: subprocess.CompletedProcess[str], *parts: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("flare serve: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr and "serving" not in result.stdout
    for part in parts:
        assert part in result.stderr


def test_metrics_address_that_is_no_address(tmp_path: Path) -> None:
    """``--metrics nonsense`` → one line naming metrics.listen and --metrics."""
    one_line_error(serve(tmp_path, "", "--metrics", "nonsense"), "metrics.listen", "--metrics")


def test_metrics_port_out_of_range_from_the_file(tmp_path: Path) -> None:
    """``[metrics] listen = "127.0.0.1:70000"`` → one line naming the key and the file."""
    result = serve(tmp_path, '[metrics]\nlisten = "127.0.0.1:70000"\n')
    one_line_error(result, "metrics.listen: port out of range", "flare.toml")


def test_negative_grace_from_the_environment(tmp_path: Path) -> None:
    """``FLARE_SERVE_GRACE=-1`` → one line naming serve.grace and the variable."""
    result = serve(tmp_path, "", FLARE_SERVE_GRACE="-1")
    one_line_error(result, "grace must be zero or more", "env FLARE_SERVE_GRACE")


def test_zero_workers(tmp_path: Path) -> None:
    """``[serve] workers = 0`` → one line."""
    one_line_error(serve(tmp_path, "[serve]\nworkers = 0\n"), "workers must be at least 1")


def test_a_boolean_where_a_number_goes(tmp_path: Path) -> None:
    """``[limits] close_timeout = true`` → one line: the type expected and the value."""
    result = serve(tmp_path, "[limits]\nclose_timeout = true\n")
    one_line_error(result, "limits.close_timeout: expected a number, got True")


def test_a_value_where_a_table_goes(tmp_path: Path) -> None:
    """``limits = 5`` → one line: limits is a table."""
    one_line_error(serve(tmp_path, "limits = 5\n"), "limits: expected a table")


def test_not_toml(tmp_path: Path) -> None:
    """A flare.toml that is not TOML → one line naming the file."""
    one_line_error(serve(tmp_path, "[limits\n"), "flare.toml: not valid TOML")


def test_a_secret_of_the_wrong_type_is_not_echoed(tmp_path: Path) -> None:
    """``[auth] jwt_secret = 12345678`` → one line that does not show the value."""
    result = serve(tmp_path, "[auth]\njwt_secret = 12345678\n")
    one_line_error(result, "auth.jwt_secret: expected a string, got ***")
    assert "12345678" not in result.stderr


@pytest.mark.parametrize("level", ["loud", "INFO "])
def test_unknown_log_level(tmp_path: Path, level: str) -> None:
    """``FLARE_LOGGING_LEVEL=loud`` → one line listing the levels."""
    result = serve(tmp_path, "", FLARE_LOGGING_LEVEL=level)
    one_line_error(result, "environment FLARE_LOGGING_LEVEL: expected one of 'debug'")


def test_im_key_that_is_not_base64(tmp_path: Path) -> None:
    """``[im] enabled, keys = {1 = "!!"}`` → one line naming im.keys.1."""
    result = serve(tmp_path, '[im]\nenabled = true\nkeys = {1 = "!!"}\n')
    one_line_error(result, "im.keys.1: not base64")


def test_admin_without_auth(tmp_path: Path) -> None:
    """``[admin] enabled = true`` and no ``[auth]`` → one line: the admin API needs auth
    (else every call would be refused and the operator would not know why)."""
    one_line_error(serve(tmp_path, "[admin]\nenabled = true\n"), "admin.enabled: ", "[auth]")


IM = f'[im]\nenabled = true\nkeys = {{1 = "{base64.b64encode(bytes(32)).decode()}"}}\n'
"""An IM section that is valid on its own."""


def test_im_push_with_an_unknown_platform(tmp_path: Path) -> None:
    """``[im.push] platforms = ["pager"]`` → one line naming the key and the platforms known."""
    result = serve(
        tmp_path,
        f"{IM}[im.push]\n"
        'webhook_url = "https://push.example.com/hook"\n'
        'webhook_secret = "whsec-0123456789abcdef"\nplatforms = ["pager"]\n',
    )
    one_line_error(result, "im.push.platforms: unknown platform 'pager'", "mobile")


def test_im_push_secret_without_a_url(tmp_path: Path) -> None:
    """``[im.push] webhook_secret`` with no ``webhook_url`` → one line (nothing would use it)."""
    result = serve(
        tmp_path,
        f'{IM}[im.push]\nwebhook_secret = "whsec-0123456789abcdef"\n',
    )
    one_line_error(result, "im.push.webhook_secret: given without im.push.webhook_url")
