"""Compare two schemas: the pipeline behind ``flare schema check``.

load both inputs → index each once (`model.Image`) → run every selected rule
once into a `Collector` → keep, per configuration, the findings its rules
select and its ignores let through → split off the findings silenced by an
in-source ``// flare:breaking-ignore RULE reason`` comment → add rename hints.
"""

from __future__ import annotations

import dataclasses
import posixpath
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from flare_codegen.schema.config import BreakingConfig, InputConfig, default_config
from flare_codegen.schema.findings import Collector, Finding
from flare_codegen.schema.flare_rules import FLARE_RULES, check_flare
from flare_codegen.schema.inputs import LoadedInput, load_input
from flare_codegen.schema.model import Image, MessageInfo
from flare_codegen.schema.rules import WIRE_GROUP, Comparison, iter_rules, quote


@dataclass(frozen=True, slots=True)
class CheckResult:
    """What a check found: breaking `findings`, comment-`ignored` ones, rename `hints`."""

    findings: list[Finding]
    ignored: list[Finding]
    hints: list[str]

    @property
    def breaking(self) -> bool:
        """True when a finding remains that no ignore comment silenced (exit 100)."""
        return bool(self.findings)


SMALL_INPUT_FILES = 300


def _small(spec: str) -> bool:
    """A directory with few .proto files, or a descriptor set (nothing to compile)."""
    path = Path(spec)
    if path.is_file():
        return True
    if not path.is_dir():
        return False
    return sum(1 for _ in islice(path.rglob("*.proto"), SMALL_INPUT_FILES)) < SMALL_INPUT_FILES


def build_image(loaded: LoadedInput) -> Image:
    """Index the files the input checks (its imports only resolve references)."""
    return Image.build(loaded.files, loaded.targets)


def check(current_spec: str, against_spec: str) -> CheckResult:
    """Check `current_spec` against `against_spec` with the current input's config.

    Raises `inputs.InputError` (bad or non-compiling input, bad configuration).
    """
    compiles = not (Path(current_spec).is_file() and Path(against_spec).is_file())
    if compiles and _small(current_spec) and _small(against_spec):
        # Small inputs: start-up dominates, so compile both sides at once (protoc
        # runs in child processes). Large ones run one after the other to keep
        # peak memory at one protoc; two descriptor sets need no protoc at all.
        with ThreadPoolExecutor(max_workers=2) as pool:
            current_job = pool.submit(load_input, current_spec, with_config=True)
            previous_job = pool.submit(load_input, against_spec, with_config=False)
            current, previous = current_job.result(), previous_job.result()
    else:
        current = load_input(current_spec, with_config=True)
        previous = load_input(against_spec, with_config=False)
    input_config = current.config or InputConfig((default_config(),))
    return compare(current, previous, input_config.configs)


def compare(
    current: LoadedInput, previous: LoadedInput, configs: tuple[BreakingConfig, ...]
) -> CheckResult:
    """Run the rules of every config in `configs` over the two loaded inputs."""
    current_image = build_image(current)
    previous_image = build_image(previous)
    wanted = frozenset().union(*(c.rules for c in configs))
    collector = Collector()
    comparison = Comparison(current_image, previous_image, collector)
    for rule in iter_rules(wanted):
        rule.check(comparison)
    flare_configs = [c for c in configs if c.flare_rules]
    if flare_configs:
        check_flare(comparison)

    kept: list[Finding] = []
    for finding in collector.findings:
        is_flare = finding.rule in FLARE_RULES
        # A finding stays when any configuration (the module's or a policy's)
        # selects its rule and does not ignore it.
        display = current.display.get(finding.path, finding.path)
        for config in flare_configs if is_flare else configs:
            if (
                (is_flare or finding.rule in config.rules)
                and config.covers(display)
                and not config.is_ignored(finding, display)
            ):
                shown = posixpath.join(current.location, display) if display else display
                kept.append(dataclasses.replace(finding, path=shown))
                break
    ordered = sorted(kept, key=Finding.sort_key)
    findings = [f for f in ordered if f.ignored is None]
    ignored = [f for f in ordered if f.ignored is not None]
    return CheckResult(findings, ignored, rename_hints(current_image, previous_image))


def _wire_signature(message: MessageInfo) -> tuple[tuple[int, int, int], ...]:
    return tuple(
        sorted((f.number, f.label, WIRE_GROUP.get(f.type, 0)) for f in message.proto.field)
    )


def rename_hints(current: Image, previous: Image) -> list[str]:
    """Deleted + added message pairs in one package whose fields match on the wire."""
    added: dict[tuple[str, tuple[tuple[int, int, int], ...]], list[MessageInfo]] = {}
    for full_name, message in current.messages.items():
        if full_name not in previous.messages and message.proto.field and not message.is_map_entry:
            key = (message.file.package, _wire_signature(message))
            added.setdefault(key, []).append(message)
    if not added:
        return []
    hints = []
    for full_name, message in previous.messages.items():
        if full_name in current.messages or message.is_map_entry:
            continue
        for candidate in added.get((message.file.package, _wire_signature(message)), []):
            hints.append(
                f"{candidate.file.name}: message {quote(candidate.full_name)} looks like a rename "
                f"of deleted message {quote(full_name)}: the binary wire format is unchanged, "
                "but JSON/text encodings, google.protobuf.Any type URLs and generated names differ."
            )
    return hints
