"""Model → the text of ``<name>_flare.ts`` (for the ``@flare/client`` runtime).

Per ``.proto`` file: one ``<NAME>_PUSH`` constant per push type and a
``PUSH_TYPES`` list, then per service a ``<Service>Routes`` table and a
``<Service>Client`` class with one method per route, typed with the message
schemas ``protoc-gen-es`` generates. Only routes a WebSocket client can call
are emitted (a Flare route id, and WebSocket among the route's transports);
the header comment names any service or method left out.

Generated code holds declarations and tables, never behaviour. The output is
a pure function of the model: names are claimed in schema order, imports
are sorted, so runs are byte-identical.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

from flare_codegen import __version__
from flare_codegen.model import File, Method, Service
from flare_codegen.names import upper_snake_case
from flare_codegen.typescript.es_names import EsSymbols, import_path, output_path
from flare_codegen.typescript.parameters import TsParameters
from flare_runtime.routing import AuthRequirement, Cardinality, Transport, wire_id

INDENT = "  "
WIDTH = 100
"""Lines longer than this are broken one item per line (prettier's shape at printWidth 100)."""

_RUNTIME_CALL = {
    Cardinality.UNARY: "unary",
    Cardinality.SERVER_STREAM: "serverStream",
    Cardinality.CLIENT_STREAM: "clientStream",
    Cardinality.BIDI_STREAM: "bidiStream",
}
_CARDINALITY = {
    Cardinality.UNARY: "unary",
    Cardinality.SERVER_STREAM: "server_stream",
    Cardinality.CLIENT_STREAM: "client_stream",
    Cardinality.BIDI_STREAM: "bidi_stream",
}
_CARDINALITY_TEXT = {
    Cardinality.UNARY: "unary",
    Cardinality.SERVER_STREAM: "server stream",
    Cardinality.CLIENT_STREAM: "client stream",
    Cardinality.BIDI_STREAM: "bidi stream",
}
# Names a class body must not use for a method (they would shadow or break it).
_RESERVED_MEMBERS = frozenset({"constructor", "transport"})


def string(text: str) -> str:
    """A TypeScript string literal (JSON's escaping is valid TypeScript)."""
    return json.dumps(text, ensure_ascii=False)


def jsdoc(text: str, indent: str) -> list[str]:
    """A JSDoc block for `text` (empty text gives no lines)."""
    lines = [line.rstrip() for line in text.strip("\n").split("\n")] if text.strip() else []
    if not lines:
        return []
    # "*/" would end the comment early.
    lines = [line.replace("*/", "*\\/") for line in lines]
    if len(lines) == 1:
        return [f"{indent}/** {lines[0]} */"]
    return [
        f"{indent}/**",
        *(f"{indent} *{' ' + line if line else ''}" for line in lines),
        f"{indent} */",
    ]


def lower_camel(name: str) -> str:
    """``SendMessage`` → ``sendMessage``, ``HTTPGet`` → ``hTTPGet`` (as protoc-gen-es)."""
    if not name:
        return name
    camel = re.sub(r"_([a-zA-Z0-9])", lambda match: match.group(1).upper(), name)
    return camel[0].lower() + camel[1:]


def callable_over_websocket(service: Service, method: Method) -> bool:
    """True when a WebSocket client can call `method`: it has a wire id and WebSocket serves it."""
    return bool(service.service_id and method.route_id) and (
        Transport.WEBSOCKET in method.options.transports
    )


class _Imports:
    """Imports by module, with a local name for each symbol (aliased on a clash)."""

    def __init__(self, taken: Iterable[str]) -> None:
        self._taken = set(taken)
        self._values: dict[tuple[str, str], str] = {}
        self._types: dict[tuple[str, str], str] = {}

    def _local(self, wanted: str) -> str:
        name = wanted
        index = 1
        while name in self._taken:
            name = f"{wanted}${index}"
            index += 1
        self._taken.add(name)
        return name

    def value(self, module: str, name: str) -> str:
        key = (module, name)
        if key not in self._values:
            self._values[key] = self._local(name)
        return self._values[key]

    def type(self, module: str, name: str) -> str:
        key = (module, name)
        if key not in self._types:
            self._types[key] = self._local(name)
        return self._types[key]

    def render(self, runtime: str) -> list[str]:
        def order(module: str) -> tuple[int, str]:
            # The Flare runtime, then packages, then relative modules.
            if module == runtime:
                return (0, module)
            return (2 if module.startswith(".") else 1, module)

        by_module: dict[str, dict[str, list[str]]] = {}
        for kind, table in (("import type", self._types), ("import", self._values)):
            for (module, name), local in table.items():
                by_module.setdefault(module, {}).setdefault(kind, []).append(
                    name if name == local else f"{name} as {local}"
                )
        lines: list[str] = []
        for module in sorted(by_module, key=order):
            for kind in ("import type", "import"):
                names = by_module[module].get(kind)
                if names:
                    lines += wrapped(f"{kind} {{", sorted(names), f"}} from {string(module)};", "")
        return lines


def wrapped(opening: str, items: list[str], closing: str, indent: str) -> list[str]:
    """``opening item, item closing`` on one line when it fits, else one item per line."""
    flat = (
        f"{indent}{opening} {', '.join(items)} {closing}"
        if items
        else f"{indent}{opening}{closing}"
    )
    if opening.endswith("(") or opening.endswith("<"):
        flat = f"{indent}{opening}{', '.join(items)}{closing}"
    if len(flat) <= WIDTH:
        return [flat]
    return [
        f"{indent}{opening}",
        *(f"{indent}{INDENT}{item}," for item in items),
        f"{indent}{closing}",
    ]


@dataclass(frozen=True, slots=True)
class _MethodNames:
    method: Method
    member: str


class _Renderer:
    def __init__(self, model: File, symbols: EsSymbols, parameters: TsParameters) -> None:
        self.model = model
        self.symbols = symbols
        self.parameters = parameters
        self.output = output_path(model.proto_path)
        self.push_names = self._push_names()
        self.services = [
            (service, [m for m in service.methods if callable_over_websocket(service, m)])
            for service in model.services
        ]
        taken = {"PUSH_TYPES", *self.push_names.values()}
        for service, methods in self.services:
            if methods:
                taken.update((service.routes_class, service.client_class))
        self.imports = _Imports(taken)

    def _push_names(self) -> dict[int, str]:
        names: dict[int, str] = {}
        used: set[str] = {"PUSH_TYPES"}
        for push in self.model.pushes:
            base = upper_snake_case(push.message.qualname.replace(".", "_")) + "_PUSH"
            name, index = base, 2
            while name in used:
                name, index = f"{base}_{index}", index + 1
            used.add(name)
            names[push.type_id] = name
        return names

    def runtime(self, name: str, *, type_only: bool = False) -> str:
        module = self.parameters.runtime
        return self.imports.type(module, name) if type_only else self.imports.value(module, name)

    def schema(self, full_name: str) -> str:
        symbol = self.symbols.schema(full_name)
        module = import_path(self.output, symbol.proto_file, self.parameters.import_extension)
        return self.imports.value(module, symbol.name)

    # ---------------------------------------------------------------- sections

    def render(self) -> str:
        body: list[list[str]] = []
        if self.model.pushes:
            body.append(self.pushes())
        for service, methods in self.services:
            if methods:
                body.append(self.routes(service, methods))
                body.append(self.client(service, methods))
        if not body:
            body.append(["export {};"])
        lines = self.header()
        imports = self.imports.render(self.parameters.runtime)
        if imports:
            lines += ["", *imports]
        for section in body:
            lines += ["", *section]
        return "\n".join(lines) + "\n"

    def header(self) -> list[str]:
        lines = [
            f"// Generated by protoc-gen-flare-ts {__version__} from {self.model.proto_path}."
            " DO NOT EDIT.",
            "/* eslint-disable */",
        ]
        skipped: list[str] = []
        for service, methods in self.services:
            left_out = [m.name for m in service.methods if m not in methods]
            if not service.service_id:
                skipped.append(f"{service.full_name}: no Flare service_id (gRPC only)")
            elif left_out:
                skipped.append(
                    f"{service.full_name}: {', '.join(left_out)} "
                    "(no route_id, or not served over WebSocket)"
                )
        if skipped:
            lines.append("//")
            lines.append("// Not callable from @flare/client, so left out:")
            lines += [f"//   {entry}" for entry in skipped]
        return lines

    def pushes(self) -> list[str]:
        push_type = self.runtime("pushType")
        lines: list[str] = []
        for push in self.model.pushes:
            name = self.push_names[push.type_id]
            schema = self.schema(push.message.full_name)
            lines.append(f"/** `{push.message.full_name}`, pushed under type id {push.type_id}. */")
            lines.append(f"export const {name} = {push_type}({push.type_id}, {schema});")
            lines.append("")
        names = [self.push_names[push.type_id] for push in self.model.pushes]
        lines.append(
            f"/** Every push type of {self.model.proto_path}: `connect(url, {{ pushTypes }})`. */"
        )
        lines.append(f"export const PUSH_TYPES = [{', '.join(names)}] as const;")
        return lines

    def routes(self, service: Service, methods: list[Method]) -> list[str]:
        route = self.runtime("route")
        lines = [
            *jsdoc(
                f"Typed routes of `{service.full_name}`: path, ids, call shape, message\n"
                "schemas and Flare options (resolved against the service defaults).",
                "",
            ),
            f"export const {service.routes_class} = {{",
        ]
        for method in methods:
            options = method.options
            timeout = (
                "undefined"
                if options.default_timeout is None
                else str(round(options.default_timeout * 1000))
            )
            transports = ", ".join(
                string(t.value.lower()) for t in Transport if t in options.transports
            )
            scopes = ", ".join(string(scope) for scope in options.scopes)
            max_bytes = (
                "undefined" if options.max_message_bytes is None else str(options.max_message_bytes)
            )
            if options.deprecated:
                note = options.deprecation_note or "the schema marks this method deprecated"
                lines += jsdoc(f"@deprecated {note}", INDENT)
            auth = "authenticated" if options.auth is AuthRequirement.AUTHENTICATED else "none"
            lines += [
                f"{INDENT}{method.constant_name}: {route}({{",
                f"{INDENT * 2}path: {string(method.path)},",
                f"{INDENT * 2}serviceId: {service.service_id},",
                f"{INDENT * 2}routeId: {method.route_id},",
                f"{INDENT * 2}wireId: {wire_id(service.service_id, method.route_id)},",
                f"{INDENT * 2}cardinality: {string(_CARDINALITY[method.cardinality])},",
                f"{INDENT * 2}input: {self.schema(method.request.full_name)},",
                f"{INDENT * 2}output: {self.schema(method.response.full_name)},",
                f"{INDENT * 2}options: {{",
                f"{INDENT * 3}idempotent: {'true' if options.idempotent else 'false'},",
                f"{INDENT * 3}auth: {string(auth)},",
                f"{INDENT * 3}scopes: [{scopes}],",
                f"{INDENT * 3}defaultTimeoutMs: {timeout},",
                f"{INDENT * 3}transports: [{transports}],",
                f"{INDENT * 3}maxMessageBytes: {max_bytes},",
                f"{INDENT * 3}deprecated: {'true' if options.deprecated else 'false'},",
                f"{INDENT * 3}deprecationNote: {string(options.deprecation_note)},",
                f"{INDENT * 2}}},",
                f"{INDENT}}}),",
            ]
        lines.append("} as const;")
        return lines

    def client(self, service: Service, methods: list[Method]) -> list[str]:
        transport_type = self.runtime("CallTransport", type_only=True)
        options_type = self.runtime("CallOptions", type_only=True)
        doc = f"Typed client of `{service.full_name}` over a `CallTransport` (a `FlareClient`)."
        if service.doc:
            doc += "\n\n" + service.doc
        lines = [
            *jsdoc(doc, ""),
            f"export class {service.client_class} {{",
            f"{INDENT}private readonly transport: {transport_type};",
            "",
            f"{INDENT}constructor(transport: {transport_type}) {{",
            f"{INDENT * 2}this.transport = transport;",
            f"{INDENT}}}",
        ]
        for entry in self._member_names(methods):
            method = entry.method
            request = self.schema(method.request.full_name)
            response = self.schema(method.response.full_name)
            init = (
                f"{self.imports.type('@bufbuild/protobuf', 'MessageInitShape')}<typeof {request}>"
            )
            shape = f"{self.imports.type('@bufbuild/protobuf', 'MessageShape')}<typeof {response}>"
            route = f"{service.routes_class}.{method.constant_name}"
            call = _RUNTIME_CALL[method.cardinality]
            doc_lines = [method.doc.strip()] if method.doc.strip() else []
            doc_lines.append(f"`{method.path}` ({_CARDINALITY_TEXT[method.cardinality]}).")
            if method.options.deprecated:
                note = method.options.deprecation_note or "the schema marks this method deprecated"
                doc_lines.append(f"@deprecated {note}")
            lines.append("")
            lines += jsdoc("\n\n".join(doc_lines), INDENT)
            if method.cardinality is Cardinality.UNARY:
                signature = [f"request: {init}", f"options?: {options_type}"]
                result = f"Promise<{shape}>"
                arguments = f"{route}, request, options"
            elif method.cardinality is Cardinality.SERVER_STREAM:
                signature = [f"request: {init}", f"options?: {options_type}"]
                result = f"{self.runtime('ServerStream', type_only=True)}<{shape}>"
                arguments = f"{route}, request, options"
            elif method.cardinality is Cardinality.CLIENT_STREAM:
                stream = self.runtime("RequestStream", type_only=True)
                signature = [f"requests: {stream}<typeof {request}>", f"options?: {options_type}"]
                result = f"Promise<{shape}>"
                arguments = f"{route}, requests, options"
            else:
                signature = [f"options?: {options_type}"]
                result = f"{self.runtime('BidiStream', type_only=True)}<{init}, {shape}>"
                arguments = f"{route}, options"
            lines += wrapped(f"{entry.member}(", signature, f"): {result} {{", INDENT)
            lines += [
                f"{INDENT * 2}return this.transport.{call}({arguments});",
                f"{INDENT}}}",
            ]
        lines.append("}")
        return lines

    @staticmethod
    def _member_names(methods: list[Method]) -> list[_MethodNames]:
        taken: set[str] = set(_RESERVED_MEMBERS)
        out: list[_MethodNames] = []
        for method in methods:
            base = lower_camel(method.name)
            name, index = base, 1
            while name in taken:
                name = f"{base}${index}"
                index += 1
            taken.add(name)
            out.append(_MethodNames(method, name))
        return out


def render_ts_file(model: File, symbols: EsSymbols, parameters: TsParameters) -> str:
    """The text of ``<name>_flare.ts`` for one file's model."""
    return _Renderer(model, symbols, parameters).render()
