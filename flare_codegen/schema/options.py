"""Access to Flare's own options (``(flare.options.v1.service)`` and friends).

The options must be registered with protobuf's default descriptor pool
*before* a descriptor set is parsed, so that the upb parser decodes them and
``options.Extensions[...]`` works. In order of preference:

1. the generated ``flare.options.v1.options_pb2`` (``generated/`` on sys.path);
2. the same module from the ``generated/`` folder of a source checkout;
3. otherwise (an installed wheel ships no generated code), ``options.proto``
   itself, compiled with the bundled protoc and added to the pool at run time.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

if TYPE_CHECKING:
    from flare.options.v1 import options_pb2
    from google.protobuf.internal.extension_dict import _ExtensionFieldDescriptor

OPTIONS_FILE = "flare/options/v1/options.proto"


@dataclass(frozen=True, slots=True)
class FlareExtensions:
    """The extension descriptors to index ``options.Extensions`` with."""

    service: _ExtensionFieldDescriptor[descriptor_pb2.ServiceOptions, options_pb2.ServiceOptions]
    method: _ExtensionFieldDescriptor[descriptor_pb2.MethodOptions, options_pb2.MethodOptions]
    message: _ExtensionFieldDescriptor[descriptor_pb2.MessageOptions, options_pb2.MessageOptions]


@cache
def load_flare_options() -> FlareExtensions:
    """Register Flare's options with the default pool (once) and return them."""
    try:
        importlib.import_module("flare.options.v1.options_pb2")
    except ImportError:
        generated = Path(__file__).resolve().parents[2] / "generated"
        if (generated / OPTIONS_FILE.replace(".proto", "_pb2.py")).is_file():
            sys.path.append(str(generated))
            importlib.import_module("flare.options.v1.options_pb2")
        else:
            register_from_source()
    pool = descriptor_pool.Default()
    # The pool hands out plain FieldDescriptors; they are these typed handles.
    return FlareExtensions(
        service=cast(
            "_ExtensionFieldDescriptor[Any, Any]",
            pool.FindExtensionByName("flare.options.v1.service"),
        ),
        method=cast(
            "_ExtensionFieldDescriptor[Any, Any]",
            pool.FindExtensionByName("flare.options.v1.method"),
        ),
        message=cast(
            "_ExtensionFieldDescriptor[Any, Any]",
            pool.FindExtensionByName("flare.options.v1.message"),
        ),
    )


def register_from_source() -> None:
    """Compile ``options.proto`` and add it to the default pool (no generated code needed)."""
    from flare_codegen.compiler import (  # noqa: PLC0415 (only without generated code)
        compile_protos,
        flare_include_dir,
    )

    compiled = compile_protos([flare_include_dir()], [OPTIONS_FILE], source_info=False)
    pool = descriptor_pool.Default()
    for proto in compiled.files.file:
        try:
            pool.FindFileByName(proto.name)
        except KeyError:
            pool.Add(proto)
    message_factory.GetMessageClassesForFiles([OPTIONS_FILE], pool)
