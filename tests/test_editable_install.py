"""The development install (``make venv``, which ``make demo`` and ``make test`` run) is one
that type checkers can follow: ``mypy --strict`` checks code outside the checkout that
imports Flare, its generated IM API and its option protos.

setuptools' default editable mode installs an import hook that mypy cannot follow; the
Makefile installs in ``compat`` mode (a ``.pth`` file naming the checkout) and adds
``generated/``, the package's second root, in ``flare-generated.pth``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

USER_CODE = """\
from __future__ import annotations

import flare_runtime as flare
from flare.im.v1 import im_pb2
from flare.im.v1.im_flare import ImServiceClient
from flare.options.v1 import options_pb2


async def login(url: str) -> im_pb2.LoginReply:
    async with flare.connect(url, token="alice") as channel:
        return await ImServiceClient(channel).login(im_pb2.LoginRequest(device_id="d"))


AUTHENTICATED: int = options_pb2.AUTH_REQUIREMENT_AUTHENTICATED
"""


def test_mypy_strict_follows_the_development_install(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(USER_CODE)
    result = subprocess.run(
        [
            sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--config-file=",
            f"--python-executable={sys.executable}", "app.py",
        ],
        cwd=tmp_path,  # outside the checkout: only the install can make Flare visible
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, (
        result.stdout + result.stderr + "\n(is .venv installed as `make venv` installs it? "
        "touch pyproject.toml && make venv)"
    )
