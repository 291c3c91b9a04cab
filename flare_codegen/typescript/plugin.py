"""``protoc-gen-flare-ts``: the I/O shell around parse → model → TypeScript render.

protoc writes a ``CodeGeneratorRequest`` to stdin and reads a
``CodeGeneratorResponse`` from stdout. Every failure the user can cause (bad
options, unknown parameters, a corrupt request) is reported through
``CodeGeneratorResponse.error`` (``file.proto:line:col: message`` for
schema errors); no traceback escapes. Run it beside ``protoc-gen-es``::

    protoc -I schemas --es_out=web/gen --flare-ts_out=web/gen chat.proto
"""

from __future__ import annotations

from typing import BinaryIO

from google.protobuf.compiler import plugin_pb2

from flare_codegen.errors import ParameterError

# Importing parse registers the Flare option extensions before the request is parsed.
from flare_codegen.parse import parse_files
from flare_codegen.plugin import plugin_main, request_problem, response, serve
from flare_codegen.typescript.es_names import EsSymbols, output_path
from flare_codegen.typescript.parameters import parse_ts_parameters
from flare_codegen.typescript.render import render_ts_file

PROGRAM = "protoc-gen-flare-ts"


def generate(request: plugin_pb2.CodeGeneratorRequest) -> plugin_pb2.CodeGeneratorResponse:
    """Turn a request into a response: ``_flare.ts`` files, or an error message."""
    try:
        parameters = parse_ts_parameters(request.parameter)
    except ParameterError as error:
        return response(str(error))
    problem = request_problem(request)
    if problem is not None:
        return response(problem)
    result = parse_files(
        request.proto_file, request.file_to_generate, parameters.model_parameters()
    )
    if result.diagnostics:
        return response("\n".join(str(diagnostic) for diagnostic in result.diagnostics))
    symbols = EsSymbols(request.proto_file)
    answer = response()
    for model in result.files:
        answer.file.add(
            name=output_path(model.proto_path),
            content=render_ts_file(model, symbols, parameters),
        )
    return answer


def run(stdin: BinaryIO, stdout: BinaryIO) -> int:
    """``protoc-gen-flare-ts`` on these streams (`flare_codegen.plugin.serve`)."""
    return serve(stdin, stdout, generate, PROGRAM)


def main() -> int:
    """Entry point of ``protoc-gen-flare-ts`` and ``python -m flare_codegen.typescript``."""
    return plugin_main(PROGRAM, "protoc --es_out=OUT --flare-ts_out=OUT ...", generate)
