"""Python names for schema elements: module paths, snake_case, collision handling."""

from __future__ import annotations

import keyword
import re
from collections.abc import Iterable

_WORD_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def proto_stem(proto_path: str) -> str:
    """``a/b/c-d.proto`` → ``a/b/c_d``, as protoc's Python generator names modules."""
    stem = proto_path.removesuffix(".proto")
    return stem.replace("-", "_")


def pb2_module(proto_path: str) -> str:
    """The module protoc's ``--python_out`` writes for `proto_path`: ``a.b.c_pb2``."""
    return proto_stem(proto_path).replace("/", ".") + "_pb2"


def flare_output_path(proto_path: str) -> str:
    """The file ``protoc-gen-flare`` writes for `proto_path`: ``a/b/c_flare.py``."""
    return proto_stem(proto_path) + "_flare.py"


def snake_case(name: str) -> str:
    """``SendMessage`` → ``send_message``, ``HTTPRequest`` → ``http_request``."""
    return _WORD_BOUNDARY.sub("_", name).lower()


def python_method_name(rpc_name: str) -> str:
    """The handler/client method name of an rpc: snake_case, never private or dunder.

    Proto identifiers may start with ``_``; a Python method named ``__init__``
    or ``_x`` would break or hide, so such names get an ``rpc`` prefix.
    """
    name = snake_case(rpc_name)
    return f"rpc{name}" if name.startswith("_") else name


def upper_snake_case(name: str) -> str:
    """``SendMessage`` → ``SEND_MESSAGE``."""
    return snake_case(name).upper()


def push_constant_name(qualname: str) -> str:
    """``MessageReceived`` → ``MESSAGE_RECEIVED_PUSH``; ``Outer.Inner`` → ``OUTER_INNER_PUSH``."""
    return "_".join(upper_snake_case(part) for part in qualname.split(".")) + "_PUSH"


def is_python_keyword(name: str) -> bool:
    """True for hard keywords (``class``, ``None``); soft keywords are valid names."""
    return keyword.iskeyword(name)


class NameScope:
    """Hands out unique names within one Python namespace.

    A wanted name that is a keyword, reserved, or already handed out gets
    underscores appended until it is free, so the result is deterministic for
    a given order of requests.
    """

    def __init__(self, reserved: Iterable[str] = ()) -> None:
        self._taken: set[str] = set(reserved)

    def claim(self, wanted: str) -> str:
        """Return `wanted`, or the closest free variant of it, and mark it taken."""
        name = wanted
        while name in self._taken or keyword.iskeyword(name):
            name += "_"
        self._taken.add(name)
        return name

    def __contains__(self, name: object) -> bool:
        return name in self._taken
