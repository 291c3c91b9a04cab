"""The configuration through the real ``flare serve``: precedence, strict keys, masking."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

import pytest

from flare_runtime.config.load import ConfigError, load_config, mask_url
from flare_runtime.testing.operated import FLARE, environment

FILE = """\
listen = {websocket = "127.0.0.1:0"}
[serve]
grace = 3
[limits]
close_timeout = 1.5
[auth]
jwt_secret = "file-secret-0123456789abcdef"
[im]
database = "postgresql://flare:hunter2-pass@db.local:5432/im"
keys = {1 = "c2VjcmV0LWtleS1ieXRlcy0wMTIzNDU2Nzg5YWJjZGU="}
"""


def flare(directory: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FLARE, "serve", *args],
        cwd=directory,
        env=environment(env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def effective(directory: Path, *args: str, **env: str) -> dict[str, object]:
    result = flare(directory, "--print-config", *args, **env)
    assert result.returncode == 0, result.stderr
    return tomllib.loads(result.stdout)


def test_flags_beat_environment_beats_file_beats_defaults(tmp_path: Path) -> None:
    (tmp_path / "flare.toml").write_text(FILE)
    both = {"FLARE_SERVE_GRACE": "4", "FLARE_LIMITS_CLOSE_TIMEOUT": "2.5"}
    config = effective(tmp_path, "--grace", "5", **both)
    assert config["serve"]["grace"] == 5.0  # type: ignore[index]
    assert config["limits"]["close_timeout"] == 2.5  # type: ignore[index]
    config = effective(tmp_path, **both)
    assert config["serve"]["grace"] == 4.0  # type: ignore[index]
    config = effective(tmp_path)
    assert config["serve"]["grace"] == 3.0  # type: ignore[index]
    assert config["limits"]["close_timeout"] == 1.5  # type: ignore[index]
    (tmp_path / "flare.toml").unlink()
    config = effective(tmp_path)
    assert config["serve"]["grace"] == 10.0  # type: ignore[index]
    assert config["limits"]["close_timeout"] == 5.0  # type: ignore[index]
    config = effective(tmp_path, "--set", "limits.protocol.keepalive_interval=7")
    assert config["limits"]["protocol"]["keepalive_interval"] == 7.0  # type: ignore[index]


def test_print_config_masks_secrets_and_says_where_values_came_from(tmp_path: Path) -> None:
    (tmp_path / "flare.toml").write_text(FILE)
    result = flare(tmp_path, "--print-config", "--ws", "127.0.0.1:9", FLARE_AUTH_LEEWAY="2")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for secret in ("file-secret-0123456789abcdef", "hunter2-pass", "c2VjcmV0LWtleS1"):
        assert secret not in out
    assert 'jwt_secret = "***"' in out
    assert 'database = "postgresql://flare:***@db.local:5432/im"' in out
    assert "leeway = 2.0  # env FLARE_AUTH_LEEWAY" in out
    assert f"grace = 3.0  # {tmp_path / 'flare.toml'}" in out
    assert f'listen = {{websocket = "127.0.0.1:9"}}  # {tmp_path / "flare.toml"}, --ws' in out


def test_tool_flare_in_pyproject_is_read(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n[tool.flare.serve]\ngrace = 7\n[tool.flare.gen]\nout = "g"\n'
    )
    assert effective(tmp_path)["serve"]["grace"] == 7.0  # type: ignore[index]


@pytest.mark.parametrize(
    ("file", "args", "env", "message"),
    [
        (
            "[limits]\nclose_timout = 3\n",
            [],
            {},
            "flare.toml: unknown key 'limits.close_timout' (did you mean 'limits.close_timeout'?)",
        ),
        (
            '[serve]\ngrace = "soon"\n',
            [],
            {},
            "flare.toml: serve.grace: expected a number, got 'soon'",
        ),
        ("", [], {"FLARE_SERVE_WORKERS": "many"}, "environment FLARE_SERVE_WORKERS: expected"),
        ("", ["--set", "limits.nope=1"], {}, "--set: unknown key 'limits.nope'"),
        (
            "[auth]\njwt_secret = 5\n",
            [],
            {},
            "flare.toml: auth.jwt_secret: expected a string, got ***",
        ),
        ('listen = {tpc = ":1"}\n', [], {}, "unknown transport 'tpc'"),
    ],
)
def test_bad_configuration_is_one_line_naming_file_and_key(
    tmp_path: Path, file: str, args: list[str], env: dict[str, str], message: str
) -> None:
    (tmp_path / "flare.toml").write_text(file)
    result = flare(tmp_path, "--print-config", *args, **env)
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_pyproject_keys_are_named_with_their_table(tmp_path: Path) -> None:
    path = tmp_path / "pyproject.toml"
    path.write_text("[tool.flare.limits]\nbogus = 1\n")
    with pytest.raises(ConfigError, match=r"pyproject.toml: unknown key 'tool.flare.limits.bogus'"):
        load_config(path, env={})


def test_option_classes_checks_run_and_name_the_source(tmp_path: Path) -> None:
    path = tmp_path / "flare.toml"
    path.write_text("[limits]\nmax_write_buffer = -1\n")
    where = r"\[limits\]: .*limits.max_write_buffer from .*flare.toml"
    with pytest.raises(ConfigError, match=where):
        load_config(path, env={})


def test_mask_url_keeps_all_but_the_password() -> None:
    assert mask_url("redis://:pw@h:6379/0") == "redis://:***@h:6379/0"
    assert mask_url("redis://h:6379/0") == "redis://h:6379/0"
