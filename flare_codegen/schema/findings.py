"""What a check reports: `Finding`, and the collector the rules write into."""

from __future__ import annotations

from dataclasses import dataclass

from flare_codegen.schema.model import FileInfo


@dataclass(frozen=True, slots=True)
class Finding:
    """One breaking change, located like buf locates it.

    Lines and columns are 1-based; an element with no source location (a
    deleted file, a deleted top-level element) is reported at 1:1, as buf does.
    `path` is empty when there is no current file to point at (a deleted file
    or package). `ignored` holds the reason of an in-source
    ``// flare:breaking-ignore RULE reason`` comment that silenced it.
    """

    rule: str
    path: str
    start_line: int
    start_column: int
    end_line: int
    end_column: int
    message: str
    against_path: str = ""
    package: str | None = None
    against_package: str | None = None
    ignored: str | None = None

    def sort_key(self) -> tuple[str, int, int, int, int, str, str]:
        return (
            self.path,
            self.start_line,
            self.start_column,
            self.end_line,
            self.end_column,
            self.rule,
            self.message,
        )


IGNORE_MARKER = "flare:breaking-ignore"


def _ignore_reason(comment: str, rule: str) -> str | None:
    """The reason given in `comment` for ignoring `rule`, if the comment ignores it."""
    for line in comment.splitlines():
        text = line.strip()
        index = text.find(IGNORE_MARKER)
        if index < 0:
            continue
        parts = text[index + len(IGNORE_MARKER) :].split(None, 1)
        if len(parts) == 2 and parts[0] == rule and parts[1].strip():
            return parts[1].strip()
    return None


class Collector:
    """Collects findings for the rules that are switched on."""

    def __init__(self) -> None:
        self.findings: list[Finding] = []

    def add(
        self,
        rule: str,
        file: FileInfo | None,
        path: tuple[int, ...] | None,
        message: str,
        *,
        against: FileInfo | None = None,
        against_name: str = "",
    ) -> None:
        """Report `message` under `rule`, located at source path `path` of `file`.

        `path` None (or a path without a recorded location) puts the finding at
        1:1 of `file`. An ignore comment attached to the located element or any
        element enclosing it silences the finding (it is kept, marked ignored).
        """
        start_line = start_column = end_line = end_column = 1
        ignored: str | None = None
        if file is not None and path is not None:
            location = file.location(path)
            if location is not None:
                span = location.span
                start_line, start_column = span[0] + 1, span[1] + 1
                if len(span) == 3:
                    end_line, end_column = span[0] + 1, span[2] + 1
                else:
                    end_line, end_column = span[2] + 1, span[3] + 1
            ignored = self._comment_ignore(file, path, rule)
        self.findings.append(
            Finding(
                rule=rule,
                path=file.name if file is not None else "",
                start_line=start_line,
                start_column=start_column,
                end_line=end_line,
                end_column=end_column,
                message=message,
                against_path=against.name if against is not None else against_name,
                package=file.package if file is not None else None,
                against_package=against.package if against is not None else None,
                ignored=ignored,
            )
        )

    @staticmethod
    def _comment_ignore(file: FileInfo, path: tuple[int, ...], rule: str) -> str | None:
        # Walk from the located element out to the file: a comment on a message
        # covers every finding inside it.
        probe = path
        while probe:
            location = file.location(probe)
            if location is not None:
                for comment in (location.leading_comments, location.trailing_comments):
                    if IGNORE_MARKER in comment:
                        reason = _ignore_reason(comment, rule)
                        if reason is not None:
                            return reason
            probe = probe[:-1]
        return None
