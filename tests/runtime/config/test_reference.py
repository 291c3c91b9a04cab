"""docs/operations.md's configuration reference is what the schema generates."""

from __future__ import annotations

from pathlib import Path

from flare_runtime.config.reference import main, reference, render
from flare_runtime.config.schema import keys

PAGE = Path(__file__).resolve().parents[3] / "docs" / "operations.md"


def test_the_committed_page_matches_the_generator() -> None:
    page = PAGE.read_text(encoding="utf-8")
    assert render(page) == page, "run: python -m flare_runtime.config.reference docs/operations.md"
    assert main(["--check", str(PAGE)]) == 0


def test_every_key_has_a_row_with_its_variable_and_a_doc() -> None:
    text = reference()
    for key in keys():
        assert f"| `{key.env}` |" in text
        assert key.doc, f"{key.path} has no doc"


def test_check_fails_on_a_stale_page(tmp_path: Path) -> None:
    stale = tmp_path / "operations.md"
    stale.write_text(PAGE.read_text(encoding="utf-8").replace("FLARE_SERVE_GRACE", "FLARE_X"))
    assert main(["--check", str(stale)]) == 1
    assert main([str(stale)]) == 0
    assert stale.read_text(encoding="utf-8") == PAGE.read_text(encoding="utf-8")
