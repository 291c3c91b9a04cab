"""Cross-check `flare schema check` against the real `buf breaking`, rule by rule.

The shared compat cases (../shared/compat/buf-cases) each switch on one rule.
This re-runs every case with *all* of buf's categories switched on (once as a
v1 config, once as v2) and with the real ``buf`` binary next to Flare, and
compares the multisets of (rule id, file, line). Flare's own FLARE_* findings
are left out (buf cannot see them). Cases using v1beta1 build roots are skipped
(their layout needs the case's own buf.yaml).

Needs ``pip install -e '.[bench]'`` (buf-bin).

    .venv/bin/python -m bench.schema_buf_crosscheck [--cases DIR]
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CONFIGS = {
    "v1-all": "version: v1\nbreaking:\n  use: [FILE, PACKAGE, WIRE_JSON, WIRE]\n",
    "v2-all": "version: v2\nbreaking:\n  use: [FILE, PACKAGE, WIRE_JSON, WIRE]\n",
}
Key = tuple[str, str, int]


def findings(stdout: str, root: Path) -> collections.Counter[Key]:
    counter: collections.Counter[Key] = collections.Counter()
    for line in stdout.splitlines():
        if not line.strip():
            continue
        obj = json.loads(line)
        if str(obj["type"]).startswith("FLARE_"):
            continue
        path = str(obj.get("path", "")).removeprefix(f"{root}/")
        counter[(str(obj["type"]), path, int(obj.get("start_line", 1)))] += 1
    return counter


def uses_roots(case: Path) -> bool:
    return any(
        (case / side / "buf.yaml").is_file() and "roots" in (case / side / "buf.yaml").read_text()
        for side in ("current", "previous")
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_cases = Path(__file__).resolve().parents[2] / "shared" / "compat" / "buf-cases"
    parser.add_argument("--cases", type=Path, default=default_cases)
    args = parser.parse_args()
    buf = shutil.which("buf", path=str(Path(sys.executable).parent)) or shutil.which("buf")
    if buf is None:
        print("buf not found: pip install -e '.[bench]'")
        return 1
    flare = str(Path(sys.executable).with_name("flare"))
    compared = differ = 0
    with tempfile.TemporaryDirectory(prefix="flare-crosscheck-") as tmp:
        for case in sorted(p for p in args.cases.iterdir() if p.is_dir()):
            if uses_roots(case):
                continue
            for name, config in CONFIGS.items():
                work = Path(tmp) / case.name / name
                for side, target in (("current", "cur"), ("previous", "prev")):
                    shutil.copytree(case / side, work / target)
                    for stale in (work / target).glob("*.yaml"):
                        stale.unlink()
                    (work / target / "buf.yaml").write_text(config)
                current, previous = work / "cur", work / "prev"
                ours = subprocess.run(
                    [flare, "schema", "check", str(current), "--against", str(previous),
                     "--format", "json"],
                    capture_output=True, text=True, check=False,
                )  # fmt: skip
                theirs = subprocess.run(
                    [buf, "breaking", str(current), "--against", str(previous),
                     "--error-format", "json"],
                    capture_output=True, text=True, check=False,
                )  # fmt: skip
                if theirs.returncode not in (0, 100):
                    print(f"buf failed on {case.name} {name}: {theirs.stderr.strip()[:200]}")
                    continue
                compared += 1
                mine, bufs = findings(ours.stdout, current), findings(theirs.stdout, current)
                if mine != bufs:
                    differ += 1
                    print(f"DIFF {case.name} {name}")
                    print(f"   flare only: {sorted((mine - bufs).elements())}")
                    print(f"   buf only:   {sorted((bufs - mine).elements())}")
    print(f"{compared - differ} / {compared} case-configs agree exactly")
    return 0 if differ == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
