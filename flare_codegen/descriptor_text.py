"""Find text that is not UTF-8 in a parsed descriptor (a hostile or corrupt descriptor set).

``descriptor.proto`` is proto2, so protobuf parses a string field holding
invalid UTF-8 without complaint and hands it back as `bytes` instead of
`str`; every later name comparison would then fail with a `TypeError`.
Readers of untrusted descriptor sets (``flare schema check``, ``flare
routes``) call `first_invalid_text` once after parsing and reject the input.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

_STRING = FieldDescriptor.TYPE_STRING
_MESSAGE = FieldDescriptor.TYPE_MESSAGE
_GROUP = FieldDescriptor.TYPE_GROUP
_SOURCE_INFO = "google.protobuf.SourceCodeInfo"


def first_invalid_text(message: Message, where: str = "") -> str | None:
    """The path (``file[2].message_type[0].name``) of the first string that is not UTF-8, if any."""
    for field, value in message.ListFields():
        kind = field.type
        if kind not in (_STRING, _MESSAGE, _GROUP):
            continue
        path = f"{where}.{field.name}" if where else field.name
        repeated = field.is_repeated
        items = value if repeated else (value,)
        if field.message_type is not None and field.message_type.full_name == _SOURCE_INFO:
            found = _first_invalid_comment(value, path)
            if found is not None:
                return found
            continue
        for index, item in enumerate(items):
            item_path = f"{path}[{index}]" if repeated else path
            if kind == _STRING:
                if not isinstance(item, str):
                    return item_path
            else:
                found = first_invalid_text(item, item_path)
                if found is not None:
                    return found
    return None


def _first_invalid_comment(info: descriptor_pb2.SourceCodeInfo, where: str) -> str | None:
    # Most of a descriptor set is source locations, whose only text is comments:
    # read those three fields directly instead of walking every location.
    for index, location in enumerate(info.location):
        if not (
            isinstance(location.leading_comments, str)
            and isinstance(location.trailing_comments, str)
            and all(isinstance(text, str) for text in location.leading_detached_comments)
        ):
            return f"{where}.location[{index}] comments"
    return None
