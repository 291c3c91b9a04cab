"""``protoc-gen-flare-ts``: the I/O shell around parse → model → TypeScript render.

protoc writes a ``CodeGeneratorRequest`` to stdin and reads a
``CodeGeneratorResponse`` from stdout. Every failure the user can cause (bad
options, unknown parameters, a corrupt request) is reported through
``CodeGeneratorResponse.error`` (``file.proto:line:col: message`` for
schema errors); no traceback escapes. Run it beside ``protoc-gen-es``::

    protoc -I schemas --es_out=web/gen --flare-ts_out=web/gen chat.proto
"""

from __future__ import annotations

import sys
from typing import BinaryIO

from google.protobuf.compiler import plugin_pb2
from google.protobuf.message import DecodeError

from flare_codegen import __version__
from flare_codegen.errors import ParameterError

# Importing parse registers the Flare option extensions before the request is parsed.
from flare_codegen.parse import parse_files
from flare_codegen.plugin import (
    MAXIMUM_EDITION,
    MINIMUM_EDITION,
    SUPPORTED_FEATURES,
    decode_request,
)
from flare_codegen.typescript.es_names import EsSymbols, output_path
from flare_codegen.typescript.parameters import parse_ts_parameters
from flare_codegen.typescript.render import render_ts_file

PROGRAM = "protoc-gen-flare-ts"


def _response(error: str | None = None) -> plugin_pb2.CodeGeneratorResponse:
    response = plugin_pb2.CodeGeneratorResponse(
        supported_features=SUPPORTED_FEATURES,
        minimum_edition=MINIMUM_EDITION,
        maximum_edition=MAXIMUM_EDITION,
    )
    if error is not None:
        response.error = error
    return response


def generate(request: plugin_pb2.CodeGeneratorRequest) -> plugin_pb2.CodeGeneratorResponse:
    """Turn a request into a response: ``_flare.ts`` files, or an error message."""
    try:
        parameters = parse_ts_parameters(request.parameter)
    except ParameterError as error:
        return _response(str(error))
    if not request.file_to_generate:
        return _response("the request names no file to generate")
    known = {proto.name for proto in request.proto_file}
    missing = [name for name in request.file_to_generate if name not in known]
    if missing:
        return _response(f"the request lacks the descriptor of {', '.join(missing)}")
    result = parse_files(
        request.proto_file, request.file_to_generate, parameters.model_parameters()
    )
    if result.diagnostics:
        return _response("\n".join(str(diagnostic) for diagnostic in result.diagnostics))
    symbols = EsSymbols(request.proto_file)
    response = _response()
    for model in result.files:
        response.file.add(
            name=output_path(model.proto_path),
            content=render_ts_file(model, symbols, parameters),
        )
    return response


def run(stdin: BinaryIO, stdout: BinaryIO) -> int:
    """Read one request from `stdin`, write one response to `stdout`; return the exit status."""
    data = stdin.read()
    try:
        request = decode_request(data)
    except DecodeError as error:
        message = f"{PROGRAM}: cannot decode the CodeGeneratorRequest on stdin: {error}"
        print(message, file=sys.stderr)
        stdout.write(_response(message).SerializeToString())
        stdout.flush()
        return 1
    try:
        response = generate(request)
    except Exception as error:  # last resort: report, never show a traceback
        response = _response(f"{PROGRAM} {__version__}: internal error: {error!r}")
    stdout.write(response.SerializeToString())
    stdout.flush()
    return 0


def main() -> int:
    """Entry point of ``protoc-gen-flare-ts`` and ``python -m flare_codegen.typescript``."""
    if len(sys.argv) > 1 and sys.argv[1] in ("--version", "-V"):
        print(f"{PROGRAM} {__version__}")
        return 0
    if len(sys.argv) > 1:
        print(
            f"usage: {PROGRAM} < CodeGeneratorRequest > CodeGeneratorResponse\n"
            "(run by protoc: protoc --es_out=OUT --flare-ts_out=OUT ...)",
            file=sys.stderr,
        )
        return 2
    return run(sys.stdin.buffer, sys.stdout.buffer)
