"""buf's breaking-change rules, reimplemented over `model.Image`.

Every rule of ``buf breaking`` (1.75) is here under buf's id, in buf's
categories for each configuration version (v1beta1, v1, v2), with buf's
messages and locations, so that `flare schema check` and `buf breaking` agree
finding for finding. Deprecated ids expand to their replacements exactly as
buf expands them.

Each rule is a function over a `Comparison` (the two images plus the element
pairs matched by full name or number, computed once and shared by all rules).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property

from google.protobuf import descriptor_pb2

from flare_codegen.schema.findings import Collector
from flare_codegen.schema.model import (
    CPP_CORD,
    CPP_FEATURES,
    CPP_STRING,
    CPP_STRING_TYPE,
    CPP_VIEW,
    ENCODING_DELIMITED,
    ENUM_CLOSED,
    ENUM_OPTIONS,
    ENUM_OPTIONS_FEATURES,
    ENUM_VALUE,
    FEATURE_ENUM_TYPE,
    FEATURE_JSON_FORMAT,
    FEATURE_UTF8_VALIDATION,
    FIELD_DEFAULT,
    FIELD_JSON_NAME,
    FIELD_NAME,
    FIELD_OPTIONS,
    FIELD_OPTIONS_FEATURES,
    FIELD_TYPE,
    FIELD_TYPE_NAME,
    FILE_OPTIONS,
    FILE_PACKAGE,
    FILE_SYNTAX,
    JAVA_FEATURES,
    JAVA_UTF8_VALIDATION,
    JAVA_VERIFY,
    JSON_ALLOW,
    MESSAGE_OPTIONS,
    MESSAGE_OPTIONS_FEATURES,
    METHOD_INPUT,
    METHOD_OPTIONS,
    METHOD_OUTPUT,
    PRESENCE_IMPLICIT,
    PRESENCE_LEGACY_REQUIRED,
    SERVICE_METHOD,
    UTF8_VERIFY,
    VALUE_NUMBER,
    EnumInfo,
    FieldInfo,
    FileInfo,
    Image,
    MessageInfo,
    ServiceInfo,
)

F = descriptor_pb2.FieldDescriptorProto
LABEL_REPEATED = F.LABEL_REPEATED
LABEL_REQUIRED = F.LABEL_REQUIRED
TYPE_MESSAGE = F.TYPE_MESSAGE
TYPE_GROUP = F.TYPE_GROUP
TYPE_ENUM = F.TYPE_ENUM
TYPE_STRING = F.TYPE_STRING
TYPE_BYTES = F.TYPE_BYTES
INT64_TYPES = frozenset(
    {F.TYPE_INT64, F.TYPE_SINT64, F.TYPE_UINT64, F.TYPE_FIXED64, F.TYPE_SFIXED64}
)

MESSAGE_RANGE_MAX = 536870911
MESSAGE_SET_RANGE_MAX = 2147483646
ENUM_RANGE_MAX = 2147483647

# buf's wire-compatibility groups (protobuf's "updating a message type" rules).
WIRE_GROUP: dict[int, int] = {
    F.TYPE_INT32: 1, F.TYPE_INT64: 1, F.TYPE_UINT32: 1, F.TYPE_UINT64: 1, F.TYPE_BOOL: 1,
    F.TYPE_SINT32: 2, F.TYPE_SINT64: 2, F.TYPE_STRING: 3, F.TYPE_BYTES: 4,
    F.TYPE_FIXED32: 5, F.TYPE_SFIXED32: 5, F.TYPE_FIXED64: 6, F.TYPE_SFIXED64: 6,
    F.TYPE_DOUBLE: 7, F.TYPE_FLOAT: 8, F.TYPE_GROUP: 9, F.TYPE_MESSAGE: 10, F.TYPE_ENUM: 11,
}  # fmt: skip
# Wire- and JSON-compatible at once: the intersection of both rule sets.
WIRE_JSON_GROUP: dict[int, int] = {
    F.TYPE_INT32: 1, F.TYPE_UINT32: 1, F.TYPE_INT64: 2, F.TYPE_UINT64: 2,
    F.TYPE_FIXED32: 3, F.TYPE_SFIXED32: 3, F.TYPE_FIXED64: 4, F.TYPE_SFIXED64: 4,
    F.TYPE_BOOL: 5, F.TYPE_SINT32: 6, F.TYPE_SINT64: 7, F.TYPE_STRING: 8, F.TYPE_BYTES: 9,
    F.TYPE_DOUBLE: 10, F.TYPE_FLOAT: 11, F.TYPE_GROUP: 12, F.TYPE_MESSAGE: 13, F.TYPE_ENUM: 14,
}  # fmt: skip
TYPE_NAMES: dict[int, str] = {
    value: name.removeprefix("TYPE_").lower() for name, value in F.Type.items()
}

CARD_EXPLICIT = "optional with explicit presence"
CARD_IMPLICIT = "optional with implicit presence"
CARD_REQUIRED = "required"
CARD_REPEATED = "repeated"
CARD_MAP = "map"
CARD_WIRE_GROUP = {
    CARD_EXPLICIT: 1,
    CARD_IMPLICIT: 1,
    CARD_REQUIRED: 2,
    CARD_REPEATED: 3,
    CARD_MAP: 3,
}
CARD_WIRE_JSON_GROUP = {**CARD_WIRE_GROUP, CARD_MAP: 4}

UTF8_NAMES = {0: "UTF8_VALIDATION_UNKNOWN", 2: "VERIFY", 3: "NONE"}
JSON_NAMES = {0: "JSON_FORMAT_UNKNOWN", 1: "ALLOW", 2: "LEGACY_BEST_EFFORT"}
CPP_NAMES = {0: "STRING_TYPE_UNKNOWN", CPP_VIEW: "VIEW", CPP_CORD: "CORD", CPP_STRING: "STRING"}
IDEMPOTENCY_NAMES = {0: "IDEMPOTENCY_UNKNOWN", 1: "NO_SIDE_EFFECTS", 2: "IDEMPOTENT"}
JSTYPE_NAMES = {0: "JS_NORMAL", 1: "JS_STRING", 2: "JS_NUMBER"}

WIRE_DOC = (
    "See https://developers.google.com/protocol-buffers/docs/proto3#updating "
    "for wire compatibility rules."
)
WIRE_JSON_DOC = (
    "See https://developers.google.com/protocol-buffers/docs/proto3#updating for wire "
    "compatibility rules and https://developers.google.com/protocol-buffers/docs/proto3#json "
    "for JSON compatibility rules."
)


def quote(value: str) -> str:
    """Go's %q for the ASCII strings that occur in schemas."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


@dataclass(slots=True, eq=False)
class FieldPair:
    current: FieldInfo
    previous: FieldInfo


class Comparison:
    """The two images and their matched element pairs, computed once, lazily."""

    def __init__(self, current: Image, previous: Image, out: Collector) -> None:
        self.current = current
        self.previous = previous
        self.out = out
        self._stable_types: dict[str, bool] = {}
        self._file_context: dict[tuple[str, str], bool] = {}

    @cached_property
    def file_pairs(self) -> list[tuple[FileInfo, FileInfo]]:
        files = self.current.files
        return [(files[name], prev) for name, prev in self.previous.files.items() if name in files]

    @cached_property
    def message_pairs(self) -> list[tuple[MessageInfo, MessageInfo]]:
        messages = self.current.messages
        return [
            (messages[name], prev)
            for name, prev in self.previous.messages.items()
            if name in messages
        ]

    @cached_property
    def enum_pairs(self) -> list[tuple[EnumInfo, EnumInfo]]:
        enums = self.current.enums
        return [(enums[name], prev) for name, prev in self.previous.enums.items() if name in enums]

    # -- skipping what did not change ------------------------------------------
    #
    # Most elements are byte-for-byte the same on both sides. A message whose
    # descriptor, resolved features, file context and referenced types are all
    # unchanged cannot produce a message- or field-level finding, so the rules
    # only walk the pairs that changed. This is what keeps a large schema with a
    # small diff cheap.

    @cached_property
    def changed_message_pairs(self) -> list[tuple[MessageInfo, MessageInfo]]:
        return [pair for pair in self.message_pairs if not self._message_unchanged(*pair)]

    @cached_property
    def changed_enum_pairs(self) -> list[tuple[EnumInfo, EnumInfo]]:
        return [
            (enum, previous)
            for enum, previous in self.enum_pairs
            if enum.features != previous.features
            or enum.proto.SerializeToString(deterministic=True)
            != previous.proto.SerializeToString(deterministic=True)
        ]

    def _file_context_unchanged(self, current: FileInfo, previous: FileInfo) -> bool:
        key = (current.name, previous.name)
        known = self._file_context.get(key)
        if known is None:
            known = (
                current.syntax == previous.syntax
                and current.edition == previous.edition
                and current.proto.options == previous.proto.options
            )
            self._file_context[key] = known
        return known

    def _type_unchanged(self, full_name: str) -> bool:
        known = self._stable_types.get(full_name)
        if known is None:
            before = self.previous.message_proto(full_name) or self.previous.enum_proto(full_name)
            after = self.current.message_proto(full_name) or self.current.enum_proto(full_name)
            known = (
                before is not None
                and after is not None
                and before.SerializeToString(deterministic=True)
                == after.SerializeToString(deterministic=True)
            )
            self._stable_types[full_name] = known
        return known

    def _message_unchanged(self, message: MessageInfo, previous: MessageInfo) -> bool:
        if message.features != previous.features:
            return False
        if not self._file_context_unchanged(message.file, previous.file):
            return False
        if message.proto.SerializeToString(deterministic=True) != previous.proto.SerializeToString(
            deterministic=True
        ):
            return False
        return all(
            self._type_unchanged(f.type_name.lstrip("."))
            for f in message.proto.field
            if f.type_name
        )

    @cached_property
    def service_pairs(self) -> list[tuple[ServiceInfo, ServiceInfo]]:
        services = self.current.services
        return [
            (services[name], prev)
            for name, prev in self.previous.services.items()
            if name in services
        ]

    @cached_property
    def method_pairs(
        self,
    ) -> list[tuple[ServiceInfo, int, descriptor_pb2.MethodDescriptorProto, ServiceInfo, int,
                    descriptor_pb2.MethodDescriptorProto]]:  # fmt: skip
        pairs = []
        for service, previous in self.service_pairs:
            methods = {m.name: (i, m) for i, m in enumerate(service.proto.method)}
            for prev_index, prev_method in enumerate(previous.proto.method):
                match = methods.get(prev_method.name)
                if match is not None:
                    pairs.append((service, match[0], match[1], previous, prev_index, prev_method))
        return pairs

    @cached_property
    def field_pairs(self) -> list[FieldPair]:
        pairs = []
        for message, previous in self.changed_message_pairs:
            fields = message.fields_by_number()
            for number, prev_field in previous.fields_by_number().items():
                current_field = fields.get(number)
                if current_field is not None:
                    pairs.append(FieldPair(current_field, prev_field))
        for extendee, prev_by_number in self.previous.extensions.items():
            by_number = self.current.extensions.get(extendee, {})
            for number, prev_field in prev_by_number.items():
                current_field = by_number.get(number)
                if current_field is not None:
                    pairs.append(FieldPair(current_field, prev_field))
        return pairs

    # -- field properties, resolved as protobuf-go resolves them --------------

    def kind(self, image: Image, f: FieldInfo) -> int:
        """The field's type, with editions' delimited messages reported as groups."""
        t = f.proto.type
        if t == TYPE_MESSAGE and f.features().message_encoding == ENCODING_DELIMITED:
            target = image.message_proto(f.proto.type_name.lstrip("."))
            if target is None or not target.options.map_entry:
                return TYPE_GROUP
        return t

    def is_map(self, image: Image, f: FieldInfo) -> bool:
        if f.proto.label != LABEL_REPEATED or f.proto.type != TYPE_MESSAGE:
            return False
        target = image.message_proto(f.proto.type_name.lstrip("."))
        return target is not None and target.options.map_entry

    def cardinality(self, image: Image, f: FieldInfo) -> str:
        proto = f.proto
        if proto.label == LABEL_REPEATED:
            return CARD_MAP if self.is_map(image, f) else CARD_REPEATED
        features = f.features()
        if proto.label == LABEL_REQUIRED or features.field_presence == PRESENCE_LEGACY_REQUIRED:
            return CARD_REQUIRED
        if (
            proto.type in (TYPE_MESSAGE, TYPE_GROUP)
            or proto.HasField("oneof_index")
            or f.extendee is not None
            or proto.proto3_optional
            or features.field_presence != PRESENCE_IMPLICIT
        ):
            return CARD_EXPLICIT
        return CARD_IMPLICIT

    def type_string(self, image: Image, f: FieldInfo) -> str:
        kind = self.kind(image, f)
        if kind == TYPE_GROUP and f.file.syntax != "proto2":
            return "message (delimited encoding)"
        return TYPE_NAMES[kind]


def in_map_entries(pair: FieldPair) -> bool:
    cur, prev = pair.current.message, pair.previous.message
    return (
        cur is not None
        and prev is not None
        and pair.current.extendee is None
        and cur.is_map_entry
        and prev.is_map_entry
    )


def first_location(file: FileInfo, *paths: tuple[int, ...]) -> tuple[int, ...]:
    """buf's withBackupLocation: the first path that has a recorded location."""
    for path in paths[:-1]:
        if file.location(path) is not None:
            return path
    return paths[-1]


def lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


# -- deletion rules ------------------------------------------------------------


def _surviving_parent(messages: dict[str, MessageInfo], nested_name: str) -> MessageInfo | None:
    parts = nested_name.split(".")
    for i in range(len(parts) - 1, 0, -1):
        parent = messages.get(".".join(parts[:i]))
        if parent is not None:
            return parent
    return None


def _deleted_location(
    file: FileInfo, messages: dict[str, MessageInfo], nested_name: str
) -> tuple[int, ...] | None:
    """Where buf reports a deleted nested element: its closest surviving parent message."""
    parent = _surviving_parent(messages, nested_name)
    return parent.path if parent is not None else None


def _file_deletions(c: Comparison, rule: str, kind: str, table: str) -> None:
    for file, previous in c.file_pairs:
        current_items = getattr(c.current, table)[file.name]
        messages = c.current.file_messages[file.name]
        for nested_name in getattr(c.previous, table)[previous.name]:
            if nested_name not in current_items:
                c.out.add(
                    rule,
                    file,
                    _deleted_location(file, messages, nested_name),
                    f"Previously present {kind} {quote(nested_name)} was deleted from file.",
                    against=previous,
                )


def enum_no_delete(c: Comparison) -> None:
    _file_deletions(c, "ENUM_NO_DELETE", "enum", "file_enums")


def message_no_delete(c: Comparison) -> None:
    _file_deletions(c, "MESSAGE_NO_DELETE", "message", "file_messages")


def extension_no_delete(c: Comparison) -> None:
    _file_deletions(c, "EXTENSION_NO_DELETE", "extension", "file_extensions")


def service_no_delete(c: Comparison) -> None:
    for file, previous in c.file_pairs:
        services = c.current.file_services[file.name]
        for name in c.previous.file_services[previous.name]:
            if name not in services:
                c.out.add(
                    "SERVICE_NO_DELETE",
                    file,
                    None,
                    f"Previously present service {quote(name)} was deleted from file.",
                    against=previous,
                )


def file_no_delete(c: Comparison) -> None:
    for name, previous in c.previous.files.items():
        if name not in c.current.files:
            c.out.add(
                "FILE_NO_DELETE",
                None,
                None,
                f"Previously present file {quote(name)} was deleted.",
                against=previous,
            )


def _package_deletions(c: Comparison, rule: str, kind: str, table: str) -> None:
    def by_package(image: Image) -> dict[str, dict[str, tuple[FileInfo, object]]]:
        result: dict[str, dict[str, tuple[FileInfo, object]]] = {}
        for file in image.files.values():
            items = result.setdefault(file.package, {})
            for nested_name, item in getattr(image, table)[file.name].items():
                items[nested_name] = (file, item)
        return result

    current = by_package(c.current)
    package_messages: dict[str, dict[str, MessageInfo]] = {}
    for info in c.current.files.values():
        package_messages.setdefault(info.package, {}).update(c.current.file_messages[info.name])
    for package, items in by_package(c.previous).items():
        current_items = current.get(package)
        if current_items is None:
            continue
        for nested_name, (previous_file, _item) in items.items():
            if nested_name in current_items:
                continue
            message = (
                f"Previously present {kind} {quote(nested_name)} was deleted from package "
                f"{quote(package)}."
            )
            file = c.current.files.get(previous_file.name)
            if file is None:
                c.out.add(rule, None, None, message, against=previous_file)
                continue
            if kind == "message":
                # buf looks for the closest surviving parent in the whole package,
                # and reports in the file that holds it.
                parent = _surviving_parent(package_messages[package], nested_name)
                if parent is not None:
                    c.out.add(rule, parent.file, parent.path, message, against=previous_file)
                    continue
                c.out.add(rule, file, None, message, against=previous_file)
                continue
            location = None
            if kind != "service":
                location = _deleted_location(file, c.current.file_messages[file.name], nested_name)
            c.out.add(rule, file, location, message, against=previous_file)


def package_enum_no_delete(c: Comparison) -> None:
    _package_deletions(c, "PACKAGE_ENUM_NO_DELETE", "enum", "file_enums")


def package_message_no_delete(c: Comparison) -> None:
    _package_deletions(c, "PACKAGE_MESSAGE_NO_DELETE", "message", "file_messages")


def package_extension_no_delete(c: Comparison) -> None:
    _package_deletions(c, "PACKAGE_EXTENSION_NO_DELETE", "extension", "file_extensions")


def package_service_no_delete(c: Comparison) -> None:
    _package_deletions(c, "PACKAGE_SERVICE_NO_DELETE", "service", "file_services")


def package_no_delete(c: Comparison) -> None:
    current = c.current.packages()
    for package, files in c.previous.packages().items():
        if package not in current:
            first = min(files, key=lambda f: f.name)
            c.out.add(
                "PACKAGE_NO_DELETE",
                None,
                None,
                f"Previously present package {quote(package)} was deleted.",
                against=first,
            )


# -- enum rules ----------------------------------------------------------------


def enum_same_type(c: Comparison) -> None:
    for enum, previous in c.changed_enum_pairs:
        closed, was_closed = (
            enum.features.enum_type == ENUM_CLOSED,
            previous.features.enum_type == ENUM_CLOSED,
        )
        if closed != was_closed:
            before, after = ("closed", "open") if was_closed else ("open", "closed")
            path = first_location(
                enum.file,
                (*enum.path, ENUM_OPTIONS, ENUM_OPTIONS_FEATURES, FEATURE_ENUM_TYPE),
                enum.path,
            )
            c.out.add(
                "ENUM_SAME_TYPE",
                enum.file,
                path,
                f"Enum {quote(enum.name)} changed from {before} to {after}.",
                against=previous.file,
            )


def _json_format_rule(
    c: Comparison,
    rule: str,
    pairs: Sequence[tuple[MessageInfo, MessageInfo] | tuple[EnumInfo, EnumInfo]],
    features_path: tuple[int, ...],
) -> None:
    """Support for JSON must not be dropped (ALLOW -> LEGACY_BEST_EFFORT)."""
    for element, previous in pairs:
        was, now = previous.features.json_format, element.features.json_format
        if was == JSON_ALLOW and now != JSON_ALLOW:
            kind = "Enum" if isinstance(element, EnumInfo) else "Message"
            c.out.add(
                rule,
                element.file,
                first_location(element.file, (*element.path, *features_path), element.path),
                f"{kind} {quote(element.name)} JSON format support changed from "
                f"{JSON_NAMES[was]} to {JSON_NAMES[now]}.",
                against=previous.file,
            )


def enum_same_json_format(c: Comparison) -> None:
    _json_format_rule(
        c,
        "ENUM_SAME_JSON_FORMAT",
        c.changed_enum_pairs,
        (ENUM_OPTIONS, ENUM_OPTIONS_FEATURES, FEATURE_JSON_FORMAT),
    )


def _enum_value_deletions(c: Comparison, rule: str, number_ok: bool, name_ok: bool) -> None:
    for enum, previous in c.changed_enum_pairs:
        values = enum.values_by_number()
        reserved_names = set(enum.proto.reserved_name)
        ranges = [(r.start, r.end) for r in enum.proto.reserved_range]  # inclusive
        for number, names in previous.values_by_number().items():
            if number in values:
                continue
            if number_ok and any(start <= number <= end for start, end in ranges):
                continue
            if name_ok and all(name in reserved_names for name in names):
                continue
            suffix = ""
            if number_ok:
                suffix = f' without reserving the number "{number}"'
            elif name_ok:
                plural = "s" if len(names) > 1 else ""
                joined = ", ".join(quote(n) for n in sorted(names))
                suffix = f" without reserving the name{plural} {joined}"
            c.out.add(
                rule,
                enum.file,
                enum.path,
                f'Previously present enum value "{number}" on enum {quote(enum.name)} '
                f"was deleted{suffix}.",
                against=previous.file,
            )


def enum_value_no_delete(c: Comparison) -> None:
    _enum_value_deletions(c, "ENUM_VALUE_NO_DELETE", False, False)


def enum_value_no_delete_unless_number_reserved(c: Comparison) -> None:
    _enum_value_deletions(c, "ENUM_VALUE_NO_DELETE_UNLESS_NUMBER_RESERVED", True, False)


def enum_value_no_delete_unless_name_reserved(c: Comparison) -> None:
    _enum_value_deletions(c, "ENUM_VALUE_NO_DELETE_UNLESS_NAME_RESERVED", False, True)


def enum_value_same_name(c: Comparison) -> None:
    for enum, previous in c.changed_enum_pairs:
        values = enum.values_by_number()
        for number, prev_names in previous.values_by_number().items():
            names = values.get(number)
            if names is None or all(name in names for name in prev_names):
                continue
            plural = "s" if len(prev_names) > 1 and len(names) > 1 else ""
            before = ", ".join(quote(n) for n in sorted(prev_names))
            after = ", ".join(quote(n) for n in sorted(names))
            for index in names.values():
                c.out.add(
                    "ENUM_VALUE_SAME_NAME",
                    enum.file,
                    (*enum.path, ENUM_VALUE, index, VALUE_NUMBER),
                    f'Enum value "{number}" on enum {quote(enum.name)} changed name{plural} '
                    f"from {before} to {after}.",
                    against=previous.file,
                )


# -- reserved and extension ranges ---------------------------------------------


def _collapse(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    result: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if result and start <= result[-1][1] + 1:
            if end > result[-1][1]:
                result[-1] = (result[-1][0], end)
        else:
            result.append((start, end))
    return result


def _missing(start: int, end: int, collapsed: list[tuple[int, int]]) -> list[tuple[int, int]]:
    missing = []
    cursor = start
    for low, high in collapsed:
        if high < cursor:
            continue
        if low > end:
            break
        if low > cursor:
            missing.append((cursor, low - 1))
        cursor = high + 1
        if cursor > end:
            break
    if cursor <= end:
        missing.append((cursor, end))
    return missing


def _range_string(start: int, end: int, maximum: int) -> str:
    if start == end:
        return f"[{start}]"
    if end == maximum:
        return f"[{start},max]"
    return f"[{start},{end}]"


def _check_ranges(
    c: Comparison,
    rule: str,
    *,
    range_kind: str,
    element_kind: str,
    element: MessageInfo | EnumInfo,
    previous: MessageInfo | EnumInfo,
    previous_ranges: list[tuple[int, int]],
    ranges: list[tuple[int, int]],
    maximum: int,
) -> None:
    if not previous_ranges:
        return
    collapsed = _collapse(ranges)
    for start, end in previous_ranges:
        missing = _missing(start, end, collapsed)
        if missing:
            removed = ", ".join(_range_string(s, e, maximum) for s, e in missing)
            c.out.add(
                rule,
                element.file,
                element.path,
                f"Previously present {range_kind} range "
                f"{quote(_range_string(start, end, maximum))} on {element_kind} "
                f"{quote(element.name)} is missing values: {removed} were removed.",
                against=previous.file,
            )


def _message_max(message: MessageInfo) -> int:
    return (
        MESSAGE_SET_RANGE_MAX
        if message.proto.options.message_set_wire_format
        else MESSAGE_RANGE_MAX
    )


def extension_message_no_delete(c: Comparison) -> None:
    for message, previous in c.changed_message_pairs:
        _check_ranges(
            c,
            "EXTENSION_MESSAGE_NO_DELETE",
            range_kind="extension",
            element_kind="message",
            element=message,
            previous=previous,
            previous_ranges=[(r.start, r.end - 1) for r in previous.proto.extension_range],
            ranges=[(r.start, r.end - 1) for r in message.proto.extension_range],
            maximum=_message_max(message),
        )


def reserved_message_no_delete(c: Comparison) -> None:
    rule = "RESERVED_MESSAGE_NO_DELETE"
    for message, previous in c.changed_message_pairs:
        _check_ranges(
            c,
            rule,
            range_kind="reserved",
            element_kind="message",
            element=message,
            previous=previous,
            previous_ranges=[(r.start, r.end - 1) for r in previous.proto.reserved_range],
            ranges=[(r.start, r.end - 1) for r in message.proto.reserved_range],
            maximum=_message_max(message),
        )
        names = set(message.proto.reserved_name)
        for name in dict.fromkeys(previous.proto.reserved_name):
            if name not in names:
                c.out.add(
                    rule,
                    message.file,
                    message.path,
                    f"Previously present reserved name {quote(name)} on message "
                    f"{quote(message.name)} was deleted.",
                    against=previous.file,
                )


def reserved_enum_no_delete(c: Comparison) -> None:
    rule = "RESERVED_ENUM_NO_DELETE"
    for enum, previous in c.changed_enum_pairs:
        _check_ranges(
            c,
            rule,
            range_kind="reserved",
            element_kind="enum",
            element=enum,
            previous=previous,
            previous_ranges=[(r.start, r.end) for r in previous.proto.reserved_range],
            ranges=[(r.start, r.end) for r in enum.proto.reserved_range],
            maximum=ENUM_RANGE_MAX,
        )
        names = set(enum.proto.reserved_name)
        for name in dict.fromkeys(previous.proto.reserved_name):
            if name not in names:
                c.out.add(
                    rule,
                    enum.file,
                    enum.path,
                    f"Previously present reserved name {quote(name)} on enum "
                    f"{quote(enum.name)} was deleted.",
                    against=previous.file,
                )


# -- message rules -------------------------------------------------------------


def _field_deletions(c: Comparison, rule: str, number_ok: bool, name_ok: bool) -> None:
    for message, previous in c.changed_message_pairs:
        fields = message.fields_by_number()
        ranges = [(r.start, r.end - 1) for r in message.proto.reserved_range]
        reserved_names = set(message.proto.reserved_name)
        for number, prev_field in previous.fields_by_number().items():
            if number in fields:
                continue
            if number_ok and any(start <= number <= end for start, end in ranges):
                continue
            if name_ok and prev_field.name in reserved_names:
                continue
            suffix = ""
            if number_ok:
                suffix = f' without reserving the number "{number}"'
            elif name_ok:
                suffix = f" without reserving the name {quote(prev_field.name)}"
            c.out.add(
                rule,
                message.file,
                message.path,
                f"Previously present {lower_first(prev_field.description())} was deleted{suffix}.",
                against=previous.file,
            )


def field_no_delete(c: Comparison) -> None:
    _field_deletions(c, "FIELD_NO_DELETE", False, False)


def field_no_delete_unless_number_reserved(c: Comparison) -> None:
    _field_deletions(c, "FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED", True, False)


def field_no_delete_unless_name_reserved(c: Comparison) -> None:
    _field_deletions(c, "FIELD_NO_DELETE_UNLESS_NAME_RESERVED", False, True)


def _is_synthetic(message: descriptor_pb2.DescriptorProto, oneof_index: int) -> bool:
    members = [
        f for f in message.field if f.HasField("oneof_index") and f.oneof_index == oneof_index
    ]
    return len(members) == 1 and members[0].proto3_optional


def oneof_no_delete(c: Comparison) -> None:
    for message, previous in c.changed_message_pairs:
        names = {o.name for o in message.proto.oneof_decl}
        for index, oneof in enumerate(previous.proto.oneof_decl):
            if oneof.name in names or _is_synthetic(previous.proto, index):
                continue
            c.out.add(
                "ONEOF_NO_DELETE",
                message.file,
                message.path,
                f"Previously present oneof {quote(oneof.name)} on message "
                f"{quote(message.name)} was deleted.",
                against=previous.file,
            )


def _required_numbers(message: MessageInfo) -> dict[int, FieldInfo]:
    # buf looks at the label only: an editions field made required with
    # `features.field_presence = LEGACY_REQUIRED` keeps LABEL_OPTIONAL, so
    # proto2 `required` -> editions LEGACY_REQUIRED reads as a deletion, as in buf.
    return {
        number: f
        for number, f in message.fields_by_number().items()
        if f.proto.label == LABEL_REQUIRED
    }


def message_same_required_fields(c: Comparison) -> None:
    rule = "MESSAGE_SAME_REQUIRED_FIELDS"
    tail = (
        " Required fields must always be sent, so if one side does not know about the "
        "required field, this will result in a breakage."
    )
    for message, previous in c.changed_message_pairs:
        required = _required_numbers(message)
        previous_required = _required_numbers(previous)
        for number in previous_required:
            if number not in required:
                c.out.add(
                    rule,
                    message.file,
                    message.path,
                    f'Message {quote(previous.name)} had required field "{number}" deleted.{tail}',
                    against=previous.file,
                )
        for number, f in required.items():
            if number not in previous_required:
                c.out.add(
                    rule,
                    message.file,
                    f.path,
                    f'Message {quote(message.name)} had required field "{number}" added.{tail}',
                )


def message_no_remove_standard_descriptor_accessor(c: Comparison) -> None:
    for message, previous in c.changed_message_pairs:
        if (
            not previous.proto.options.no_standard_descriptor_accessor
            and message.proto.options.no_standard_descriptor_accessor
        ):
            c.out.add(
                "MESSAGE_NO_REMOVE_STANDARD_DESCRIPTOR_ACCESSOR",
                message.file,
                (*message.path, MESSAGE_OPTIONS, 2),
                'Message option "no_standard_descriptor_accessor" changed from "false" to "true".',
                against=previous.file,
            )


def message_same_json_format(c: Comparison) -> None:
    _json_format_rule(
        c,
        "MESSAGE_SAME_JSON_FORMAT",
        c.changed_message_pairs,
        (MESSAGE_OPTIONS, MESSAGE_OPTIONS_FEATURES, FEATURE_JSON_FORMAT),
    )


def deprecated_without_replacement(c: Comparison) -> None:
    """buf deprecated the rule with no replacement: selecting it checks nothing."""
    return


# -- field rules ---------------------------------------------------------------


def _cardinality_rule(c: Comparison, rule: str, groups: dict[str, int] | None) -> None:
    for pair in c.field_pairs:
        if in_map_entries(pair):
            continue
        was = c.cardinality(c.previous, pair.previous)
        now = c.cardinality(c.current, pair.current)
        if was == now or (groups is not None and groups[was] == groups[now]):
            continue
        f = pair.current
        c.out.add(
            rule,
            f.file,
            f.path,
            f"{f.description()} changed cardinality from {quote(was)} to {quote(now)}.",
            against=pair.previous.file,
        )


def field_same_cardinality(c: Comparison) -> None:
    _cardinality_rule(c, "FIELD_SAME_CARDINALITY", None)


def field_wire_compatible_cardinality(c: Comparison) -> None:
    _cardinality_rule(c, "FIELD_WIRE_COMPATIBLE_CARDINALITY", CARD_WIRE_GROUP)


def field_wire_json_compatible_cardinality(c: Comparison) -> None:
    _cardinality_rule(c, "FIELD_WIRE_JSON_COMPATIBLE_CARDINALITY", CARD_WIRE_JSON_GROUP)


def _type_path(c: Comparison, image: Image, f: FieldInfo) -> tuple[int, ...]:
    kind = c.kind(image, f)
    return (
        *f.path,
        FIELD_TYPE_NAME if kind in (TYPE_MESSAGE, TYPE_ENUM, TYPE_GROUP) else FIELD_TYPE,
    )


def _changed_type(c: Comparison, rule: str, pair: FieldPair, extra: str = "") -> None:
    f = pair.current
    was = c.type_string(c.previous, pair.previous)
    now = c.type_string(c.current, f)
    c.out.add(
        rule,
        f.file,
        _type_path(c, c.current, f),
        f"{f.description()} changed type from {quote(was)} to {quote(now)}."
        + (f" {extra}" if extra else ""),
        against=pair.previous.file,
    )


def _changed_type_name(c: Comparison, rule: str, pair: FieldPair) -> None:
    f = pair.current
    c.out.add(
        rule,
        f.file,
        (*f.path, FIELD_TYPE_NAME),
        f"{f.description()} changed type from {quote(pair.previous.proto.type_name.lstrip('.'))} "
        f"to {quote(f.proto.type_name.lstrip('.'))}.",
        against=pair.previous.file,
    )


def field_same_type(c: Comparison) -> None:
    rule = "FIELD_SAME_TYPE"
    for pair in c.field_pairs:
        if c.kind(c.previous, pair.previous) != c.kind(c.current, pair.current):
            _changed_type(c, rule, pair)
        elif (
            pair.current.proto.type in (TYPE_ENUM, TYPE_GROUP, TYPE_MESSAGE)
            and pair.previous.proto.type_name != pair.current.proto.type_name
        ):
            _changed_type_name(c, rule, pair)


def _enum_compatible(c: Comparison, pair: FieldPair) -> bool:
    """buf's test for an enum field retyped to another enum: same short name, superset."""
    previous = c.previous.enum_proto(pair.previous.proto.type_name.lstrip("."))
    current = c.current.enum_proto(pair.current.proto.type_name.lstrip("."))
    if previous is None or current is None or previous.name != current.name:
        return False
    current_values = {(v.name, v.number) for v in current.value}
    return all((v.name, v.number) in current_values for v in previous.value)


def _compatible_type_rule(c: Comparison, rule: str, groups: dict[int, int], doc: str) -> None:
    for pair in c.field_pairs:
        was = c.kind(c.previous, pair.previous)
        now = c.kind(c.current, pair.current)
        if groups[was] != groups[now]:
            if rule == "FIELD_WIRE_COMPATIBLE_TYPE":
                if was == TYPE_STRING and now == TYPE_BYTES:
                    continue
                if was == TYPE_BYTES and now == TYPE_STRING:
                    _changed_type(
                        c,
                        rule,
                        pair,
                        doc + " Note that while string and bytes are compatible if the data is "
                        "valid UTF-8, there is no way to enforce that a bytes field is UTF-8, "
                        "so these fields may be incompatible.",
                    )
                    continue
            _changed_type(c, rule, pair, doc)
            continue
        same_name = pair.previous.proto.type_name == pair.current.proto.type_name
        if now == TYPE_ENUM and not same_name:
            if not _enum_compatible(c, pair):
                _changed_type_name(c, rule, pair)
        elif now in (TYPE_GROUP, TYPE_MESSAGE) and not same_name:
            _changed_type_name(c, rule, pair)


def field_wire_compatible_type(c: Comparison) -> None:
    _compatible_type_rule(c, "FIELD_WIRE_COMPATIBLE_TYPE", WIRE_GROUP, WIRE_DOC)


def field_wire_json_compatible_type(c: Comparison) -> None:
    _compatible_type_rule(c, "FIELD_WIRE_JSON_COMPATIBLE_TYPE", WIRE_JSON_GROUP, WIRE_JSON_DOC)


def field_same_name(c: Comparison) -> None:
    for pair in c.field_pairs:
        f, p = pair.current, pair.previous
        if p.extendee is not None:
            was, now = p.full_name, f.full_name
        else:
            was, now = p.name, f.name
        if was != now:
            c.out.add(
                "FIELD_SAME_NAME",
                f.file,
                (*f.path, FIELD_NAME),
                f"{f.description(with_name=False)} changed name from {quote(was)} to {quote(now)}.",
                against=p.file,
            )


def field_same_json_name(c: Comparison) -> None:
    for pair in c.field_pairs:
        f, p = pair.current, pair.previous
        if p.extendee is not None:
            continue
        if p.proto.json_name != f.proto.json_name:
            path = first_location(f.file, (*f.path, FIELD_JSON_NAME), f.path)
            c.out.add(
                "FIELD_SAME_JSON_NAME",
                f.file,
                path,
                f'{f.description()} changed option "json_name" from {quote(p.proto.json_name)} '
                f"to {quote(f.proto.json_name)}.",
                against=p.file,
            )


def field_same_jstype(c: Comparison) -> None:
    for pair in c.field_pairs:
        f, p = pair.current, pair.previous
        if p.proto.type not in INT64_TYPES or f.proto.type not in INT64_TYPES:
            continue
        was, now = p.proto.options.jstype, f.proto.options.jstype
        if was != now:
            path = first_location(f.file, (*f.path, FIELD_OPTIONS, 6), f.path)
            c.out.add(
                "FIELD_SAME_JSTYPE",
                f.file,
                path,
                f'{f.description()} changed option "jstype" from {quote(JSTYPE_NAMES[was])} '
                f"to {quote(JSTYPE_NAMES[now])}.",
                against=p.file,
            )


def _cpp_string_type(f: FieldInfo) -> tuple[int, bool]:
    options = f.proto.options
    if f.file.edition < 1001 and f.proto.HasField("options") and options.HasField("ctype"):
        ctype = options.ctype
        if ctype == descriptor_pb2.FieldOptions.CORD:
            return CPP_CORD, False
        if ctype == descriptor_pb2.FieldOptions.STRING_PIECE:
            return CPP_STRING, True
        if ctype == descriptor_pb2.FieldOptions.STRING or f.file.syntax != "editions":
            return CPP_STRING, False
    return f.features().cpp_string_type, False


def field_same_cpp_string_type(c: Comparison) -> None:
    for pair in c.field_pairs:
        if in_map_entries(pair):
            continue
        f, p = pair.current, pair.previous
        if p.proto.type not in (TYPE_STRING, TYPE_BYTES) or f.proto.type not in (
            TYPE_STRING,
            TYPE_BYTES,
        ):
            continue
        was, was_piece = _cpp_string_type(p)
        now, now_piece = _cpp_string_type(f)
        if (was != now or was_piece != now_piece) and not (was_piece and now == CPP_STRING):
            before = "STRING_PIECE" if was_piece else CPP_NAMES.get(was, str(was))
            after = "STRING_PIECE" if now_piece else CPP_NAMES.get(now, str(now))
            path = first_location(
                f.file,
                (*f.path, FIELD_OPTIONS, 1),
                (*f.path, FIELD_OPTIONS, FIELD_OPTIONS_FEATURES, CPP_FEATURES, CPP_STRING_TYPE),
                f.path,
            )
            c.out.add(
                "FIELD_SAME_CPP_STRING_TYPE",
                f.file,
                path,
                f"{f.description()} changed C++ string type from {quote(before)} "
                f"to {quote(after)}.",
                against=p.file,
            )


def _java_utf8(f: FieldInfo) -> int:
    default = f.features().utf8_validation
    options = f.file.proto.options
    if f.file.syntax != "editions" or options.HasField("java_string_check_utf8"):
        return UTF8_VERIFY if options.java_string_check_utf8 else default
    if f.features().java_utf8_validation == JAVA_VERIFY:
        return UTF8_VERIFY
    return default


def field_same_java_utf8_validation(c: Comparison) -> None:
    for pair in c.field_pairs:
        f, p = pair.current, pair.previous
        if p.proto.type != TYPE_STRING or f.proto.type != TYPE_STRING:
            continue
        was, now = _java_utf8(p), _java_utf8(f)
        if was != now:
            path = first_location(
                f.file,
                (FILE_OPTIONS, 27),
                (
                    *f.path,
                    FIELD_OPTIONS,
                    FIELD_OPTIONS_FEATURES,
                    JAVA_FEATURES,
                    JAVA_UTF8_VALIDATION,
                ),
                f.path,
            )
            c.out.add(
                "FIELD_SAME_JAVA_UTF8_VALIDATION",
                f.file,
                path,
                f"{f.description()} changed Java string UTF8 validation from "
                f"{quote(UTF8_NAMES[was])} to {quote(UTF8_NAMES[now])}.",
                against=p.file,
            )


def field_same_utf8_validation(c: Comparison) -> None:
    for pair in c.field_pairs:
        f, p = pair.current, pair.previous
        if p.proto.type != TYPE_STRING or f.proto.type != TYPE_STRING:
            continue
        was, now = p.features().utf8_validation, f.features().utf8_validation
        if was != now:
            path = first_location(
                f.file,
                (*f.path, FIELD_OPTIONS, FIELD_OPTIONS_FEATURES, FEATURE_UTF8_VALIDATION),
                f.path,
            )
            c.out.add(
                "FIELD_SAME_UTF8_VALIDATION",
                f.file,
                path,
                f"{f.description()} changed UTF8 validation from {UTF8_NAMES[was]} "
                f"to {UTF8_NAMES[now]}.",
                against=p.file,
            )


def field_same_oneof(c: Comparison) -> None:
    for pair in c.field_pairs:
        f, p = pair.current, pair.previous
        if p.extendee is not None:
            continue
        was, now = p.real_oneof(), f.real_oneof()
        if was is None and now is None:
            continue
        if was is not None and now is not None:
            if was.name != now.name:
                c.out.add(
                    "FIELD_SAME_ONEOF",
                    f.file,
                    f.path,
                    f"{f.description()} moved from oneof {quote(was.name)} "
                    f"to oneof {quote(now.name)}.",
                    against=p.file,
                )
            continue
        before, after = ("inside", "outside") if was is not None else ("outside", "inside")
        c.out.add(
            "FIELD_SAME_ONEOF",
            f.file,
            f.path,
            f"{f.description()} moved from {before} to {after} a oneof.",
            against=p.file,
        )


def _default_value(c: Comparison, image: Image, f: FieldInfo) -> tuple[object, str]:
    """(comparable, printable) default of a scalar field, as protobuf-go reports it."""
    proto = f.proto
    text = proto.default_value
    t = proto.type
    if t == TYPE_BYTES:
        data = _unescape_bytes(text) if proto.HasField("default_value") else b""
        return data.decode("latin-1"), "[" + ",".join(f"0x{b:X}" for b in data) + "]"
    if t == TYPE_STRING:
        string = text if proto.HasField("default_value") else ""
        return string, quote(string)
    if t == TYPE_ENUM:
        enum = image.enum_proto(proto.type_name.lstrip("."))
        if enum is None or not enum.value:
            return 0, "0"
        if proto.HasField("default_value"):
            for enum_value in enum.value:
                if enum_value.name == text:
                    return enum_value.number, f"{enum.name}.{enum_value.name}"
        first = enum.value[0]
        return first.number, f"{enum.name}.{first.name}"
    if t == F.TYPE_BOOL:
        flag = proto.HasField("default_value") and text == "true"
        return flag, "true" if flag else "false"
    if t in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        real = _parse_float(text) if proto.HasField("default_value") else 0.0
        if t == F.TYPE_FLOAT and math.isfinite(real):
            real = float(struct.unpack("f", struct.pack("f", real))[0])
        return ("float" if t == F.TYPE_FLOAT else "double", real), _go_float(real)
    number = _parse_int(text) if proto.HasField("default_value") else 0
    return number, str(number)


def _parse_int(text: str) -> int:
    # protoc writes integer defaults in decimal; other producers may not.
    try:
        return int(text, 10)
    except ValueError:
        return int(text, 0)


def _parse_float(text: str) -> float:
    lowered = text.lower()
    if lowered in ("inf", "+inf"):
        return math.inf
    if lowered == "-inf":
        return -math.inf
    if lowered == "nan":
        return math.nan
    return float(text)


def _go_float(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return (
        repr(value).removesuffix(".0") if value == int(value) and abs(value) < 1e21 else repr(value)
    )


def _unescape_bytes(text: str) -> bytes:
    """protoc's C-escaped bytes default (\\NNN octal, \\xHH, \\n ...) back to bytes."""
    return text.encode("latin-1").decode("unicode_escape").encode("latin-1")


def _defaults_equal(was: object, now: object) -> bool:
    if isinstance(was, str) or isinstance(now, str):
        return was == now
    if isinstance(was, tuple) and isinstance(now, tuple):
        (was_kind, was_value), (now_kind, now_value) = was, now
        assert isinstance(was_value, float) and isinstance(now_value, float)
        if math.isnan(was_value) and math.isnan(now_value):
            return True
        if was_kind != now_kind:  # float <-> double: compare at float precision
            pack = struct.Struct("f")
            return bool(pack.unpack(pack.pack(was_value)) == pack.unpack(pack.pack(now_value)))
        return was_value == now_value
    was_number = was[1] if isinstance(was, tuple) else was
    now_number = now[1] if isinstance(now, tuple) else now
    assert isinstance(was_number, (int, float)) and isinstance(now_number, (int, float))
    if isinstance(was_number, float) and math.isnan(was_number):
        return isinstance(now_number, float) and math.isnan(now_number)
    return was_number == now_number


def _is_zero(value: object) -> bool:
    if isinstance(value, tuple):
        return value[1] == 0.0 and math.copysign(1.0, value[1]) > 0
    return not value


def field_same_default(c: Comparison) -> None:
    for pair in c.field_pairs:
        f, p = pair.current, pair.previous
        if (
            c.cardinality(c.previous, p) in (CARD_REPEATED, CARD_MAP)
            or c.cardinality(c.current, f) in (CARD_REPEATED, CARD_MAP)
            or p.proto.type in (TYPE_MESSAGE, TYPE_GROUP)
            or f.proto.type in (TYPE_MESSAGE, TYPE_GROUP)
        ):
            continue
        was, was_text = _default_value(c, c.previous, p)
        now, now_text = _default_value(c, c.current, f)
        if _is_zero(was) and _is_zero(now):
            continue
        if not _defaults_equal(was, now):
            path = first_location(f.file, (*f.path, FIELD_DEFAULT), f.path)
            c.out.add(
                "FIELD_SAME_DEFAULT",
                f.file,
                path,
                f"{f.description()} changed default value from {was_text} to {now_text}.",
                against=p.file,
            )


# -- file rules ----------------------------------------------------------------

FILE_OPTION_RULES: dict[str, tuple[str, int]] = {
    "FILE_SAME_CC_ENABLE_ARENAS": ("cc_enable_arenas", 31),
    "FILE_SAME_CC_GENERIC_SERVICES": ("cc_generic_services", 16),
    "FILE_SAME_CSHARP_NAMESPACE": ("csharp_namespace", 37),
    "FILE_SAME_GO_PACKAGE": ("go_package", 11),
    "FILE_SAME_JAVA_GENERIC_SERVICES": ("java_generic_services", 17),
    "FILE_SAME_JAVA_MULTIPLE_FILES": ("java_multiple_files", 10),
    "FILE_SAME_JAVA_OUTER_CLASSNAME": ("java_outer_classname", 8),
    "FILE_SAME_JAVA_PACKAGE": ("java_package", 1),
    "FILE_SAME_OBJC_CLASS_PREFIX": ("objc_class_prefix", 36),
    "FILE_SAME_OPTIMIZE_FOR": ("optimize_for", 9),
    "FILE_SAME_PHP_CLASS_PREFIX": ("php_class_prefix", 40),
    "FILE_SAME_PHP_METADATA_NAMESPACE": ("php_metadata_namespace", 44),
    "FILE_SAME_PHP_NAMESPACE": ("php_namespace", 41),
    "FILE_SAME_PY_GENERIC_SERVICES": ("py_generic_services", 18),
    "FILE_SAME_RUBY_PACKAGE": ("ruby_package", 45),
    "FILE_SAME_SWIFT_PREFIX": ("swift_prefix", 39),
}
OPTIMIZE_NAMES = {1: "SPEED", 2: "CODE_SIZE", 3: "LITE_RUNTIME"}


def _option_text(options: descriptor_pb2.FileOptions, name: str) -> str:
    value = getattr(options, name)
    if isinstance(value, bool):
        return "true" if value else "false"
    if name == "optimize_for":
        return OPTIMIZE_NAMES.get(value, str(value))
    return str(value)


def _file_option_rule(rule: str) -> Callable[[Comparison], None]:
    name, number = FILE_OPTION_RULES[rule]

    def check(c: Comparison) -> None:
        for file, previous in c.file_pairs:
            was = _option_text(previous.proto.options, name)
            now = _option_text(file.proto.options, name)
            if was != now:
                c.out.add(
                    rule,
                    file,
                    (FILE_OPTIONS, number),
                    f'File option "{name}" changed from {quote(was)} to {quote(now)}.',
                    against=previous,
                )

    check.__name__ = rule.lower()
    return check


def _syntax_name(file: FileInfo) -> str:
    if file.syntax == "editions":
        return "editions"
    return file.syntax


def file_same_syntax(c: Comparison) -> None:
    for file, previous in c.file_pairs:
        was, now = _syntax_name(previous), _syntax_name(file)
        if was != now:
            c.out.add(
                "FILE_SAME_SYNTAX",
                file,
                (FILE_SYNTAX,),
                f"File syntax changed from {quote(was)} to {quote(now)}.",
                against=previous,
            )


def file_same_package(c: Comparison) -> None:
    for file, previous in c.file_pairs:
        if previous.package != file.package:
            c.out.add(
                "FILE_SAME_PACKAGE",
                file,
                (FILE_PACKAGE,),
                f"File package changed from {quote(previous.package)} to {quote(file.package)}.",
                against=previous,
            )


# -- service rules -------------------------------------------------------------


def rpc_no_delete(c: Comparison) -> None:
    for service, previous in c.service_pairs:
        names = {m.name for m in service.proto.method}
        for method in previous.proto.method:
            if method.name not in names:
                c.out.add(
                    "RPC_NO_DELETE",
                    service.file,
                    service.path,
                    f"Previously present RPC {quote(method.name)} on service "
                    f"{quote(service.name)} was deleted.",
                    against=previous.file,
                )


def _streaming_rule(c: Comparison, rule: str, side: str) -> None:
    attr = f"{side}_streaming"
    for service, index, method, previous, _prev_index, prev_method in c.method_pairs:
        was, now = getattr(prev_method, attr), getattr(method, attr)
        if was != now:
            before, after = ("streaming", "unary") if was else ("unary", "streaming")
            c.out.add(
                rule,
                service.file,
                (*service.path, SERVICE_METHOD, index),
                f"RPC {quote(method.name)} on service {quote(service.name)} changed from "
                f"{side} {before} to {side} {after}.",
                against=previous.file,
            )


def rpc_same_client_streaming(c: Comparison) -> None:
    _streaming_rule(c, "RPC_SAME_CLIENT_STREAMING", "client")


def rpc_same_server_streaming(c: Comparison) -> None:
    _streaming_rule(c, "RPC_SAME_SERVER_STREAMING", "server")


def _type_rule(c: Comparison, rule: str, attr: str, number: int, word: str) -> None:
    for service, index, method, previous, _prev_index, prev_method in c.method_pairs:
        was, now = getattr(prev_method, attr).lstrip("."), getattr(method, attr).lstrip(".")
        if was != now:
            c.out.add(
                rule,
                service.file,
                (*service.path, SERVICE_METHOD, index, number),
                f"RPC {quote(method.name)} on service {quote(service.name)} changed {word} type "
                f"from {quote(was)} to {quote(now)}.",
                against=previous.file,
            )


def rpc_same_request_type(c: Comparison) -> None:
    _type_rule(c, "RPC_SAME_REQUEST_TYPE", "input_type", METHOD_INPUT, "request")


def rpc_same_response_type(c: Comparison) -> None:
    _type_rule(c, "RPC_SAME_RESPONSE_TYPE", "output_type", METHOD_OUTPUT, "response")


def rpc_same_idempotency_level(c: Comparison) -> None:
    for service, index, method, previous, _prev_index, prev_method in c.method_pairs:
        was, now = prev_method.options.idempotency_level, method.options.idempotency_level
        if was != now:
            path = (*service.path, SERVICE_METHOD, index, METHOD_OPTIONS, 34)
            c.out.add(
                "RPC_SAME_IDEMPOTENCY_LEVEL",
                service.file,
                path if service.file.location(path) is not None else None,
                f"RPC {quote(method.name)} on service {quote(service.name)} changed option "
                f'"idempotency_level" from {quote(IDEMPOTENCY_NAMES[was])} to '
                f"{quote(IDEMPOTENCY_NAMES[now])}.",
                against=previous.file,
            )


# -- the rule table ------------------------------------------------------------

C, FI, P, J, W = "CSR", "FILE", "PACKAGE", "WIRE_JSON", "WIRE"


@dataclass(frozen=True, slots=True)
class Rule:
    """One buf rule: its id, what it checks, and its categories per config version.

    A version maps to None when the rule does not exist there, and to an
    empty tuple when the rule is deprecated there (then `replacements` says
    what selecting it selects instead).
    """

    id: str
    check: Callable[[Comparison], None]
    purpose: str
    v1beta1: tuple[str, ...] | None
    v1: tuple[str, ...] | None
    v2: tuple[str, ...] | None
    replacements: tuple[str, ...] = field(default=())

    def categories(self, version: str) -> tuple[str, ...] | None:
        return {"v1beta1": self.v1beta1, "v1": self.v1, "v2": self.v2}[version]


def _r(  # noqa: PLR0917 (a table row reads best positionally)
    rule_id: str,
    check: Callable[[Comparison], None],
    v1beta1: tuple[str, ...] | None,
    v1: tuple[str, ...] | None,
    v2: tuple[str, ...] | None,
    purpose: str,
    replacements: tuple[str, ...] = (),
) -> Rule:
    """A table row: id, check, categories in v1beta1 / v1 / v2, purpose, replacements."""
    return Rule(rule_id, check, purpose, v1beta1, v1, v2, replacements)


_FP = (FI, P)
_FPJ = (FI, P, J)
_FPJW = (FI, P, J, W)

# fmt: off
BUF_RULES: tuple[Rule, ...] = (
    _r("ENUM_NO_DELETE", enum_no_delete, (FI,), (FI,), (C, FI),
       "enums are not deleted from a given file"),
    _r("EXTENSION_NO_DELETE", extension_no_delete, None, None, (FI,),
       "extensions are not deleted from a given file"),
    _r("FILE_NO_DELETE", file_no_delete, (FI,), (FI,), (C, FI),
       "files are not deleted"),
    _r("MESSAGE_NO_DELETE", message_no_delete, (FI,), (FI,), (C, FI),
       "messages are not deleted from a given file"),
    _r("SERVICE_NO_DELETE", service_no_delete, (FI,), (FI,), (FI,),
       "services are not deleted from a given file"),
    _r("ENUM_SAME_TYPE", enum_same_type, _FP, _FP, _FP,
       "enums do not change from open to closed or back"),
    _r("ENUM_VALUE_NO_DELETE", enum_value_no_delete, _FP, _FP, (C, FI, P),
       "enum values are not deleted from a given enum"),
    _r("EXTENSION_MESSAGE_NO_DELETE", extension_message_no_delete, _FP, _FP, (C, FI, P),
       "extension ranges are not deleted from a given message"),
    _r("FIELD_NO_DELETE", field_no_delete, _FP, _FP, (C, FI, P),
       "fields are not deleted from a given message"),
    _r("FIELD_SAME_CARDINALITY", field_same_cardinality, _FPJW, _FP, _FP,
       "fields do not change cardinality"),
    _r("FIELD_SAME_CPP_STRING_TYPE", field_same_cpp_string_type, _FP, _FP, _FP,
       "fields do not change their C++ string type"),
    _r("FIELD_SAME_JAVA_UTF8_VALIDATION", field_same_java_utf8_validation, _FP, _FP, _FP,
       "fields do not change their Java UTF-8 validation"),
    _r("FIELD_SAME_JSTYPE", field_same_jstype, _FP, _FP, _FP,
       "fields do not change the jstype option"),
    _r("FIELD_SAME_TYPE", field_same_type, _FPJW, _FP, (C, FI, P),
       "fields do not change type"),
    _r("FIELD_SAME_UTF8_VALIDATION", field_same_utf8_validation, _FP, _FP, _FP,
       "string fields do not change UTF-8 validation"),
    *(
        _r(rule_id, _file_option_rule(rule_id), _FP, _FP, _FP,
           f'files do not change option "{option}"')
        for rule_id, (option, _n) in FILE_OPTION_RULES.items()
    ),
    _r("FILE_SAME_SYNTAX", file_same_syntax, _FP, _FP, (C, FI, P),
       "files do not change syntax or edition"),
    _r("MESSAGE_NO_REMOVE_STANDARD_DESCRIPTOR_ACCESSOR",
       message_no_remove_standard_descriptor_accessor, _FP, _FP, (C, FI, P),
       "messages do not turn on no_standard_descriptor_accessor"),
    _r("ONEOF_NO_DELETE", oneof_no_delete, _FP, _FP, (C, FI, P),
       "oneofs are not deleted from a given message"),
    _r("RPC_NO_DELETE", rpc_no_delete, _FP, _FP, _FP,
       "RPCs are not deleted from a given service"),
    _r("ENUM_SAME_JSON_FORMAT", enum_same_json_format, _FPJ, _FPJ, (C, FI, P, J),
       "enums keep JSON format support"),
    _r("ENUM_VALUE_SAME_NAME", enum_value_same_name, _FPJ, _FPJ, (C, FI, P, J),
       "enum values keep their name"),
    _r("FIELD_SAME_JSON_NAME", field_same_json_name, _FPJ, _FPJ, (C, FI, P, J),
       "fields keep their json_name"),
    _r("FIELD_SAME_NAME", field_same_name, _FPJ, _FPJ, (C, FI, P, J),
       "fields keep their name"),
    _r("MESSAGE_SAME_JSON_FORMAT", message_same_json_format, _FPJ, _FPJ, (C, FI, P, J),
       "messages keep JSON format support"),
    _r("FIELD_SAME_DEFAULT", field_same_default, None, None, (C, *_FPJW),
       "fields keep their default value"),
    _r("FIELD_SAME_ONEOF", field_same_oneof, _FPJW, _FPJW, (C, *_FPJW),
       "fields do not move into, out of or between oneofs"),
    _r("FILE_SAME_PACKAGE", file_same_package, (FI,), _FPJW, (C, *_FPJW),
       "files do not change package"),
    _r("MESSAGE_SAME_REQUIRED_FIELDS", message_same_required_fields, _FPJW, _FPJW, (C, *_FPJW),
       "messages neither add nor delete required fields"),
    _r("RESERVED_ENUM_NO_DELETE", reserved_enum_no_delete, _FPJW, _FPJW, (C, *_FPJW),
       "reserved ranges and names are not deleted from enums"),
    _r("RESERVED_MESSAGE_NO_DELETE", reserved_message_no_delete, _FPJW, _FPJW, (C, *_FPJW),
       "reserved ranges and names are not deleted from messages"),
    _r("RPC_SAME_CLIENT_STREAMING", rpc_same_client_streaming, _FPJW, _FPJW, (C, *_FPJW),
       "RPCs keep client streaming"),
    _r("RPC_SAME_IDEMPOTENCY_LEVEL", rpc_same_idempotency_level, _FPJW, _FPJW, (C, *_FPJW),
       "RPCs keep their idempotency level"),
    _r("RPC_SAME_REQUEST_TYPE", rpc_same_request_type, _FPJW, _FPJW, (C, *_FPJW),
       "RPCs keep their request type"),
    _r("RPC_SAME_RESPONSE_TYPE", rpc_same_response_type, _FPJW, _FPJW, (C, *_FPJW),
       "RPCs keep their response type"),
    _r("RPC_SAME_SERVER_STREAMING", rpc_same_server_streaming, _FPJW, _FPJW, (C, *_FPJW),
       "RPCs keep server streaming"),
    _r("PACKAGE_ENUM_NO_DELETE", package_enum_no_delete, (P,), (P,), (P,),
       "enums are not deleted from a given package"),
    _r("PACKAGE_EXTENSION_NO_DELETE", package_extension_no_delete, None, None, (P,),
       "extensions are not deleted from a given package"),
    _r("PACKAGE_MESSAGE_NO_DELETE", package_message_no_delete, (P,), (P,), (P,),
       "messages are not deleted from a given package"),
    _r("PACKAGE_NO_DELETE", package_no_delete, (P,), (P,), (P,),
       "packages are not deleted"),
    _r("PACKAGE_SERVICE_NO_DELETE", package_service_no_delete, (P,), (P,), (P,),
       "services are not deleted from a given package"),
    _r("ENUM_VALUE_NO_DELETE_UNLESS_NAME_RESERVED", enum_value_no_delete_unless_name_reserved,
       (J,), (J,), (C, J),
       "enum values are deleted only with their name reserved"),
    _r("FIELD_NO_DELETE_UNLESS_NAME_RESERVED", field_no_delete_unless_name_reserved,
       (J,), (J,), (C, J),
       "fields are deleted only with their name reserved"),
    _r("FIELD_WIRE_JSON_COMPATIBLE_CARDINALITY", field_wire_json_compatible_cardinality,
       (J,), (J,), (C, J),
       "fields keep a wire- and JSON-compatible cardinality"),
    _r("FIELD_WIRE_JSON_COMPATIBLE_TYPE", field_wire_json_compatible_type, None, (J,), (C, J),
       "fields keep a wire- and JSON-compatible type"),
    _r("ENUM_VALUE_NO_DELETE_UNLESS_NUMBER_RESERVED",
       enum_value_no_delete_unless_number_reserved, (J, W), (J, W), (C, J, W),
       "enum values are deleted only with their number reserved"),
    _r("FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED", field_no_delete_unless_number_reserved,
       (J, W), (J, W), (C, J, W),
       "fields are deleted only with their number reserved"),
    _r("FIELD_WIRE_COMPATIBLE_CARDINALITY", field_wire_compatible_cardinality,
       (W,), (W,), (W,),
       "fields keep a wire-compatible cardinality"),
    _r("FIELD_WIRE_COMPATIBLE_TYPE", field_wire_compatible_type, None, (W,), (W,),
       "fields keep a wire-compatible type"),
    # Deprecated ids (empty categories): selecting one selects its replacements.
    _r("FIELD_SAME_CTYPE", field_same_cpp_string_type, (), (), None,
       "deprecated: use FIELD_SAME_CPP_STRING_TYPE", ("FIELD_SAME_CPP_STRING_TYPE",)),
    _r("FIELD_SAME_LABEL", field_same_cardinality, (), (), None,
       "deprecated: use the three cardinality rules",
       ("FIELD_SAME_CARDINALITY", "FIELD_WIRE_COMPATIBLE_CARDINALITY",
        "FIELD_WIRE_JSON_COMPATIBLE_CARDINALITY")),
    _r("FILE_SAME_JAVA_STRING_CHECK_UTF8", field_same_java_utf8_validation, (), (), None,
       "deprecated: use FIELD_SAME_JAVA_UTF8_VALIDATION", ("FIELD_SAME_JAVA_UTF8_VALIDATION",)),
    _r("FILE_SAME_PHP_GENERIC_SERVICES", deprecated_without_replacement, (), (), None,
       "deprecated, checks nothing"),
    _r("MESSAGE_SAME_MESSAGE_SET_WIRE_FORMAT", deprecated_without_replacement,
       (), (), (), "deprecated, checks nothing"),
)
# fmt: on

RULES_BY_ID: dict[str, Rule] = {rule.id: rule for rule in BUF_RULES}


def iter_rules(ids: frozenset[str]) -> Iterator[Rule]:
    """The buf rules among `ids`, in table order."""
    return (rule for rule in BUF_RULES if rule.id in ids)
