"""Print a `CheckResult` as text, JSON, GitHub Actions annotations or JUnit XML.

``text`` and ``json`` are byte-for-byte buf's ``--error-format text|json``
shapes on stdout (``path:line:col:message``; one JSON object per line with
``path``, ``start_line``, ``start_column``, ``end_line``, ``end_column``,
``type`` and ``message``), so tools written for buf read Flare's output.
Findings silenced by an ignore comment and rename hints are extra
information: they go to stderr in those two formats, and into the report
itself (as notices / skipped test cases) in ``github-actions`` and ``junit``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:  # annotations only: `flare --help` imports this module for FORMATS
    from flare_codegen.schema.check import CheckResult
    from flare_codegen.schema.findings import Finding

FORMATS = ("text", "json", "github-actions", "junit")
"""The output formats of `flare schema check --format`."""


def escape(text: str) -> str:
    """XML character data."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def quoteattr(text: str) -> str:
    """An XML attribute value, quotes included (xml.sax.saxutils would pull in urllib)."""
    return '"' + escape(text).replace('"', "&quot;").replace("\n", "&#10;") + '"'


def _where(f: Finding) -> str:
    return f"{f.path or '<input>'}:{f.start_line}:{f.start_column}"


def _json(f: Finding) -> dict[str, object]:
    return {
        "path": f.path,
        "start_line": f.start_line,
        "start_column": f.start_column,
        "end_line": f.end_line,
        "end_column": f.end_column,
        "type": f.rule,
        "message": f.message,
    }


def _gh_escape(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _gh_property(text: str) -> str:
    return _gh_escape(text).replace(":", "%3A").replace(",", "%2C")


def _gh_annotation(kind: str, f: Finding, text: str) -> str:
    props = [f"title={_gh_property(f.rule)}"]
    if f.path:
        props = [
            f"file={_gh_property(f.path)}",
            f"line={f.start_line}",
            f"col={f.start_column}",
            f"endLine={f.end_line}",
            f"endColumn={f.end_column}",
            *props,
        ]
    return f"::{kind} {','.join(props)}::{_gh_escape(text)}"


def write_report(result: CheckResult, fmt: str, out: TextIO, err: TextIO) -> None:
    """Write `result` in format `fmt` (one of `FORMATS`) to `out` (and notes to `err`)."""
    if fmt == "text":
        for f in result.findings:
            out.write(f"{_where(f)}:{f.message}\n")
        for f in result.ignored:
            err.write(f"{_where(f)}:ignored {f.rule} ({f.ignored}): {f.message}\n")
        for hint in result.hints:
            err.write(f"hint: {hint}\n")
    elif fmt == "json":
        for f in result.findings:
            out.write(json.dumps(_json(f)) + "\n")
        for f in result.ignored:
            err.write(json.dumps({**_json(f), "ignored": f.ignored}) + "\n")
        for hint in result.hints:
            err.write(json.dumps({"hint": hint}) + "\n")
    elif fmt == "github-actions":
        for f in result.findings:
            out.write(_gh_annotation("error", f, f.message) + "\n")
        for f in result.ignored:
            out.write(_gh_annotation("notice", f, f"ignored ({f.ignored}): {f.message}") + "\n")
        for hint in result.hints:
            out.write(f"::notice title=rename hint::{_gh_escape(hint)}\n")
    elif fmt == "junit":
        out.write(_junit(result))
    else:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")


def _junit(result: CheckResult) -> str:
    cases = []
    for f in result.findings:
        name = quoteattr(f"{_where(f)}:{f.rule}")
        cases.append(
            f"    <testcase classname={quoteattr(f.path or '<input>')} name={name}>\n"
            f"      <failure type={quoteattr(f.rule)} message={quoteattr(f.message)}>"
            f"{escape(_where(f))}:{escape(f.message)}</failure>\n"
            "    </testcase>\n"
        )
    for f in result.ignored:
        name = quoteattr(f"{_where(f)}:{f.rule}")
        cases.append(
            f"    <testcase classname={quoteattr(f.path or '<input>')} name={name}>\n"
            f"      <skipped message={quoteattr(f'ignored: {f.ignored}')}/>\n"
            "    </testcase>\n"
        )
    if not cases:
        cases.append('    <testcase classname="flare.schema" name="no breaking changes"/>\n')
    total = max(1, len(result.findings) + len(result.ignored))
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        "<testsuites>\n"
        f'  <testsuite name="flare schema check" tests="{total}" '
        f'failures="{len(result.findings)}" skipped="{len(result.ignored)}">\n'
        + "".join(cases)
        + "  </testsuite>\n</testsuites>\n"
    )
