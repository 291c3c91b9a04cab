"""Model → the text of ``<name>_flare.py``.

An import-tracking printer: the body asks `Imports` for every name it uses and
gets back the local name (aliased when it would collide with a generated
name), then the import block is printed from what was asked for.

The output must already be what ``ruff format`` and ``ruff check`` (isort
rules included) accept at the requested line length (ruff's default 88
unless the ``line_length`` parameter says otherwise): every construct is
either flat when it fits or exploded one item per line with a trailing comma
(a "magic trailing comma", which both the formatter and the import sorter keep
exploded at any width). Only the shapes ruff splits without such a comma (a
long single-argument subscript, a union) are laid out for the exact width.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Iterable, Sequence

from flare_codegen import __version__
from flare_codegen.model import File, Method, Push, Service
from flare_runtime.routing import ALL_TRANSPORTS, Cardinality, Transport

DEFAULT_WIDTH = 88
"""ruff's default line length."""
INDENT = "    "

_STDLIB = frozenset({"abc", "collections.abc", "typing"})


# Strings ---------------------------------------------------------------------


def _escape_char(char: str) -> str:
    """An escape sequence for a character that is not printable (lower-case hex, as ruff)."""
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


# Characters that need escaping (or at least a closer look) in literals and
# docstrings; most text has none and is copied as is.
_LITERAL_SPECIAL = re.compile(r"[\\\"'\x00-\x1f\x7f-\U0010ffff]")
_DOCSTRING_SPECIAL = re.compile(r"[\\\"\x00-\x08\x0a-\x1f\x7f-\U0010ffff]")

_SHORT_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escape(text: str, quote: str) -> str:
    if not _LITERAL_SPECIAL.search(text):
        return text
    out: list[str] = []
    for char in text:
        if char in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[char])
        elif char == quote:
            out.append("\\" + quote)
        elif not char.isprintable():
            out.append(_escape_char(char))
        else:
            out.append(char)
    return "".join(out)


def string_literal(text: str) -> str:
    """A Python string literal for `text`, quoted the way ruff format prefers."""
    quote = "'" if text.count('"') > text.count("'") else '"'
    return quote + _escape(text, quote) + quote


def _docstring_line(line: str, *, last: bool) -> str:
    if not _DOCSTRING_SPECIAL.search(line):
        return line
    out: list[str] = []
    quotes = 0  # unescaped double quotes just emitted; a third would close the string
    for char in line:
        if char == '"':
            if quotes == 2:
                out.append('\\"')
                quotes = 0
            else:
                out.append(char)
                quotes += 1
            continue
        quotes = 0
        if char == "\\":
            out.append("\\\\")
        elif char.isprintable() or char == "\t":
            out.append(char)
        else:
            out.append(_escape_char(char))
    if last and out and out[-1] == '"':
        out[-1] = '\\"'  # a quote right before the closing quotes would merge with them
    return "".join(out)


def docstring(text: str, indent: str) -> list[str]:
    """Docstring lines for `text` (already dedented), at `indent`.

    Escapes what would end the string early or change its value, and strips
    what ruff format would strip (trailing spaces, the first line's indent).
    """
    raw = [line.rstrip() for line in text.split("\n")]
    raw[0] = raw[0].lstrip()
    lines = [_docstring_line(line, last=index == len(raw) - 1) for index, line in enumerate(raw)]
    if lines[0].startswith('"'):
        # `""""x` is valid, but ruff format would insert a space after the opening quotes.
        lines[0] = '\\"' + lines[0][1:]
    if len(lines) == 1:
        return [f'{indent}"""{lines[0]}"""']
    out = [f'{indent}"""{lines[0]}']
    out.extend(f"{indent}{line}" if line else "" for line in lines[1:])
    out.append(f'{indent}"""')
    return out


# Imports -----------------------------------------------------------------------


class Imports:
    """Tracks the imports a module needs and the local name of each.

    `taken` holds the module's own top-level names; an imported name that
    would shadow one of them, or another import, is aliased with a leading
    underscore.
    """

    def __init__(self, taken: Iterable[str], width: int = DEFAULT_WIDTH) -> None:
        self._width = width
        self._taken: set[str] = set(taken)
        self._plain: set[str] = set()  # `import x`
        self._from: dict[tuple[str, str], str] = {}  # (module, name) -> local name

    def _free(self, wanted: str) -> str:
        name = wanted
        while name in self._taken or keyword.iskeyword(name):
            name = "_" + name
        self._taken.add(name)
        return name

    def module(self, module: str) -> str:
        """``import module``; returns the name to use (module is a top-level name)."""
        if module not in self._plain:
            if module in self._taken:
                raise ValueError(f"module name {module} collides with a generated name")
            self._plain.add(module)
            self._taken.add(module)
        return module

    def name(self, module: str, name: str) -> str:
        """``from module import name``; returns the local name to use."""
        key = (module, name)
        local = self._from.get(key)
        if local is None:
            local = self._free(name)
            self._from[key] = local
        return local

    def pb2(self, module: str) -> str:
        """Import a ``_pb2`` module by its full dotted path; returns its local name.

        The local name is the module's last component, qualified with parent
        components when two imported modules share a last component.
        """
        package, _, leaf = module.rpartition(".")
        key = (package, leaf)
        local = self._from.get(key)
        if local is not None:
            return local
        parts = module.split(".")
        for count in range(1, len(parts) + 1):
            candidate = "_".join(parts[-count:])
            if candidate not in self._taken and not keyword.iskeyword(candidate):
                break
        else:
            candidate = self._free("_" + "_".join(parts))
        self._taken.add(candidate)
        self._from[key] = candidate
        return candidate

    def render(self) -> list[str]:
        """The import block, sorted as ruff's isort rules want, without ``__future__``."""
        sections: list[list[str]] = []
        for stdlib in (True, False):
            plain = [(m, m) for m in self._plain if (m in _STDLIB) == stdlib]
            by_module: dict[str, list[tuple[str, str]]] = {}
            for (module, name), local in self._from.items():
                if not module:
                    # A top-level `_pb2` (a .proto at the include root):
                    # `import x_pb2`, there is no package to import it from.
                    if not stdlib:
                        plain.append((name, local))
                elif (module in _STDLIB) == stdlib:
                    by_module.setdefault(module, []).append((name, local))
            lines = [
                f"import {module}" if module == local else f"import {module} as {local}"
                for module, local in sorted(plain, key=lambda item: _module_key(item[0]))
            ]
            for module in sorted(by_module, key=_module_key):
                members = sorted(by_module[module], key=lambda item: _member_key(item[0]))
                plain_members = [name for name, local in members if name == local]
                aliased = [(name, local) for name, local in members if name != local]
                if plain_members:
                    lines.extend(_from_import(module, plain_members, self._width))
                for name, local in aliased:
                    lines.extend(_from_import(module, [f"{name} as {local}"], self._width))
            if lines:
                sections.append(lines)
        out: list[str] = []
        for section in sections:
            if out:
                out.append("")
            out.extend(section)
        return out


def _module_key(module: str) -> tuple[str, str]:
    return (module.lower(), module)


def _member_key(name: str) -> tuple[int, str, str]:
    # ruff's isort `order-by-type`: CONSTANTS, then Classes, then functions/variables.
    if name.isupper() and len(name) > 1:
        kind = 0
    elif name[:1].isupper():
        kind = 1
    else:
        kind = 2
    return (kind, name.lower(), name)


def _from_import(module: str, members: Sequence[str], width: int) -> list[str]:
    flat = f"from {module} import {', '.join(members)}"
    if len(members) == 1 and len(flat) <= width:
        return [flat]
    return [f"from {module} import (", *(f"{INDENT}{member}," for member in members), ")"]


# Expressions -------------------------------------------------------------------


def _call(
    indent: str, prefix: str, arguments: Sequence[str], width: int, suffix: str = ""
) -> list[str]:
    """``prefix(arg, ...)suffix`` flat when it fits and has one argument, else exploded."""
    flat = f"{indent}{prefix}({', '.join(arguments)}){suffix}"
    if len(flat) <= width and "\n" not in flat and len(arguments) <= 1:
        return [flat]
    inner = indent + INDENT
    lines = [f"{indent}{prefix}("]
    for argument in arguments:
        head, *rest = argument.split("\n")
        lines.append(f"{inner}{head}")
        lines.extend(f"{inner}{line}" for line in rest)
        lines[-1] += ","
    lines.append(f"{indent}){suffix}")
    return lines


def _tuple(items: Sequence[str], lead: int, width: int) -> str:
    """A tuple expression starting `lead` columns in; may span lines (joined by newlines)."""
    if not items:
        return "()"
    if len(items) == 1:
        flat = f"({items[0]},)"
        if lead + len(flat) + 1 <= width:
            return flat
    else:
        flat = f"({', '.join(items)})"
        if (
            lead + len(flat) + 1 <= width
            and len(items) <= 3
            and all("(" not in item for item in items)
        ):
            return flat
    body = "\n".join(f"{INDENT}{item}," for item in items)
    return f"(\n{body}\n)"


# The module --------------------------------------------------------------------


class _Renderer:
    def __init__(self, model: File, width: int) -> None:
        self.model = model
        taken = {"PUSH_TYPES", *(push.constant_name for push in model.pushes)}
        for service in model.services:
            taken.update(
                (
                    service.base_class,
                    service.routes_class,
                    service.client_class,
                    service.table_constant,
                    service.register_function,
                )
            )
        self.width = width
        self.imports = Imports(taken, width)
        # Claim every _pb2 module in sorted order first so that aliases do not
        # depend on the order the body happens to mention them.
        modules: set[str] = set()
        for service in model.services:
            for method in service.methods:
                modules.update((method.request.module, method.response.module))
        modules.update(push.message.module for push in model.pushes)
        for module in sorted(modules):
            self.imports.pb2(module)

    def message(self, module: str, qualname: str) -> str:
        return f"{self.imports.pb2(module)}.{qualname}"

    def runtime(self, module: str, name: str) -> str:
        return self.imports.name(f"flare_runtime.{module}", name)

    def render(self) -> str:
        body: list[list[str]] = [self.push_table()]
        for service in self.model.services:
            body.append(self.routes_class(service))
            body.append(self.service_table(service))
            body.append(self.base_class(service))
            body.append(self.client_class(service))
            body.append(self.register_function(service))
        head = [
            f"# Generated by protoc-gen-flare {__version__} from {self.model.proto_path}. "
            "DO NOT EDIT.",
            *docstring(self._module_doc(), ""),
            "",
            "from __future__ import annotations",
            "",
            *self.imports.render(),
        ]
        out = head
        for index, block in enumerate(body):
            # isort wants one blank line between the imports and a statement,
            # ruff format two around classes and functions.
            out.extend(("",) if index == 0 else ("", ""))
            out.extend(block)
        return "\n".join(out) + "\n"

    def _module_doc(self) -> str:
        lines = [f"Flare declarations for {self.model.proto_path}."]
        if self.model.services:
            lines += ["", "Routing tables, handler bases and clients of:", ""]
            lines += [f"- `{service.full_name}`" for service in self.model.services]
        if self.model.pushes:
            lines += [
                "",
                "Push types: one ``*_PUSH`` constant per pushed message, all in `PUSH_TYPES`.",
            ]
        return "\n".join(lines)

    # Per file

    def push_table(self) -> list[str]:
        final = self.imports.name("typing", "Final")
        table = self.runtime("routing", "PushTable")
        lines: list[str] = []
        for push in self.model.pushes:
            lines.extend(self.push_constant(push))
            lines.append("")
        if not self.model.pushes:
            return [f"PUSH_TYPES: {final} = {table}(types=())"]
        names = [push.constant_name for push in self.model.pushes]
        types = _tuple(names, len(INDENT) + len("types="), self.width)
        lines.extend(_call("", f"PUSH_TYPES: {final} = {table}", ["types=" + types], self.width))
        return lines

    def push_constant(self, push: Push) -> list[str]:
        final = self.imports.name("typing", "Final")
        push_type = self.runtime("routing", "PushType")
        message = self.message(push.message.module, push.message.qualname)
        target = f"{push.constant_name}: {final}[{push_type}[{message}]]"
        arguments = [f"type_id={push.type_id}", f"message_type={message}"]
        call = _call("", f"{target} = {push_type}", arguments, self.width)
        if len(call[0]) <= self.width:
            return call
        if len(f"{target} = (") <= self.width:
            # ruff wraps the value in parentheses when the target fits on its line,
            inside = _call(INDENT, push_type, arguments, self.width)
            return [f"{target} = (", *inside, ")"]
        # else splits the annotation's outer subscript, then the inner one.
        inner = [f"{INDENT}{push_type}[{message}]"]
        if len(inner[0]) > self.width:
            inner = [f"{INDENT}{push_type}[", f"{INDENT * 2}{message}", f"{INDENT}]"]
        call[:1] = [f"{push.constant_name}: {final}[", *inner, f"] = {push_type}("]
        return call

    # Per service

    def routes_class(self, service: Service) -> list[str]:
        final = self.imports.name("typing", "Final")
        lines = [f"class {service.routes_class}:"]
        doc = (
            f"Typed routes of `{service.full_name}`.\n\n"
            "One constant per method, holding its path, ids, cardinality, message\n"
            "classes and Flare options resolved against the service defaults."
        )
        lines += docstring(doc, INDENT)
        route = self.runtime("routing", "Route")
        for method in service.methods:
            request = self.message(method.request.module, method.request.qualname)
            response = self.message(method.response.module, method.response.qualname)
            name = method.constant_name
            call = _call(
                INDENT,
                f"{name}: {final}[{route}[{request}, {response}]] = {route}",
                self.route_arguments(service, method),
                self.width,
            )
            if len(call[0]) > self.width:
                # Explode the type arguments (with a magic trailing comma) so the
                # formatter keeps this shape at every line length.
                call[:1] = [
                    f"{INDENT}{name}: {final}[",
                    f"{INDENT * 2}{route}[",
                    f"{INDENT * 3}{request},",
                    f"{INDENT * 3}{response},",
                    f"{INDENT * 2}]",
                    f"{INDENT}] = {route}(",
                ]
            lines.append("")
            lines.extend(call)
        return lines

    def route_arguments(self, service: Service, method: Method) -> list[str]:
        cardinality = self.runtime("routing", "Cardinality")
        return [
            f"path={string_literal(method.path)}",
            f"service_id={service.service_id}",
            f"route_id={method.route_id}",
            f"cardinality={cardinality}.{method.cardinality.name}",
            f"request_type={self.message(method.request.module, method.request.qualname)}",
            f"response_type={self.message(method.response.module, method.response.qualname)}",
            f"handler_name={string_literal(method.handler_name)}",
            "options=" + "\n".join(self.route_options(method)),
        ]

    def route_options(self, method: Method) -> list[str]:
        options = method.options
        auth = self.runtime("routing", "AuthRequirement")
        lead = len(INDENT) * 3 + len("scopes=")
        arguments = [
            f"idempotent={options.idempotent}",
            f"auth={auth}.{options.auth.name}",
            f"scopes={_tuple([string_literal(s) for s in options.scopes], lead, self.width)}",
            f"default_timeout={options.default_timeout!r}",
            f"transports={self.transports(options.transports)}",
            f"max_message_bytes={options.max_message_bytes!r}",
            f"deprecated={options.deprecated}",
            f"deprecation_note={string_literal(options.deprecation_note)}",
        ]
        return _call("", self.runtime("routing", "RouteOptions"), arguments, self.width)

    def transports(self, transports: frozenset[Transport]) -> str:
        if transports == ALL_TRANSPORTS:
            return self.runtime("routing", "ALL_TRANSPORTS")
        name = self.runtime("routing", "Transport")
        members = ", ".join(f"{name}.{t.name}" for t in Transport if t in transports)
        return f"frozenset({{{members}}})"

    def service_table(self, service: Service) -> list[str]:
        final = self.imports.name("typing", "Final")
        routes = [f"{service.routes_class}.{method.constant_name}" for method in service.methods]
        reserved = [f"({start}, {end})" for start, end in service.reserved_route_ids]
        arguments = [
            f"name={string_literal(service.full_name)}",
            f"service_id={service.service_id}",
            "routes=" + _tuple(routes, len(INDENT) + len("routes="), self.width),
            "reserved_route_ids="
            + _tuple(reserved, len(INDENT) + len("reserved_route_ids="), self.width),
        ]
        return _call(
            "",
            f"{service.table_constant}: {final} = {self.runtime('routing', 'ServiceRoutes')}",
            arguments,
            self.width,
        )

    def base_class(self, service: Service) -> list[str]:
        if service.methods:
            abc = self.imports.module("abc")
            lines = [f"class {service.base_class}({abc}.ABC):"]
        else:  # nothing to implement: an ABC without abstract methods is a lint error
            lines = [f"class {service.base_class}:"]
        doc = f"Implement this to serve `{service.full_name}`."
        if service.doc:
            doc = f"{doc}\n\n{service.doc}"
        lines += docstring(doc, INDENT)
        lines.append("")
        lines.extend(self.bindings(service))
        context = self.runtime("context", "CallContext")
        for method in service.methods:
            request = self.message(method.request.module, method.request.qualname)
            response = self.message(method.response.module, method.response.qualname)
            cardinality = method.cardinality
            iterator = (
                self.imports.name("collections.abc", "AsyncIterator")
                if (cardinality is not Cardinality.UNARY)
                else ""
            )
            if cardinality.client_streams:
                parameter = f"requests: {iterator}[{request}]"
            else:
                parameter = f"request: {request}"
            returns = f"{iterator}[{response}]" if cardinality.server_streams else response
            is_async = not cardinality.server_streams
            lines.append("")
            lines.extend(self._decorators(method))
            lines.append(f"{INDENT}@{abc}.abstractmethod")
            lines.extend(
                _signature(
                    INDENT,
                    ("async def " if is_async else "def ") + method.handler_name,
                    ["self", parameter, f"context: {context}"],
                    returns,
                    self.width,
                )
            )
            lines.extend(docstring(self._handler_doc(method), INDENT * 2))
        return lines

    def bindings(self, service: Service) -> list[str]:
        """The class attributes naming the tables a handler base implements (`Server.add`)."""
        class_var = self.imports.name("typing", "ClassVar")
        lines: list[str] = []
        for attribute, kind, value in (
            ("__flare_service__", "ServiceRoutes", service.table_constant),
            ("__flare_push_types__", "PushTable", "PUSH_TYPES"),
        ):
            table_type = self.runtime("routing", kind)
            target = f"{INDENT}{attribute}: {class_var}[{table_type}]"
            if len(f"{target} = {value}") <= self.width:
                lines.append(f"{target} = {value}")
            elif len(f"{target} = (") <= self.width:  # as ruff: parenthesize the value first,
                lines += [f"{target} = (", f"{INDENT * 2}{value}", f"{INDENT})"]
            else:  # then split the annotation
                lines += [
                    f"{INDENT}{attribute}: {class_var}[",
                    f"{INDENT * 2}{table_type}",
                    f"{INDENT}] = {value}",
                ]
        return lines

    def _handler_doc(self, method: Method) -> str:
        shape = {
            Cardinality.UNARY: "Handle one request; return the response.",
            Cardinality.SERVER_STREAM: (
                "Handle one request; yield the responses (implement as an async generator)."
            ),
            Cardinality.CLIENT_STREAM: "Consume the request stream; return the response.",
            Cardinality.BIDI_STREAM: (
                "Consume the request stream; yield the responses (an async generator)."
            ),
        }[method.cardinality]
        summary = f"``{method.path}`` ({method.cardinality.value.replace('_', ' ')})."
        parts = [method.doc] if method.doc else []
        parts += [summary, shape]
        return "\n\n".join(parts)

    def _decorators(self, method: Method) -> list[str]:
        if not method.options.deprecated:
            return []
        module = self.imports.module("typing_extensions")
        note = method.options.deprecation_note or f"{method.path} is deprecated"
        return _call(INDENT, f"@{module}.deprecated", [string_literal(note)], self.width)

    def client_class(self, service: Service) -> list[str]:
        channel = self.runtime("client", "Channel")
        metadata = self.runtime("metadata", "MetadataLike")
        lines = [f"class {service.client_class}:"]
        lines += docstring(
            f"Typed client of `{service.full_name}` over any Flare `Channel`.\n\n"
            "Every method takes keyword-only ``timeout`` (seconds; the route's default\n"
            "applies when None) and ``metadata`` (request headers).",
            INDENT,
        )
        lines += [
            "",
            f"{INDENT}def __init__(self, channel: {channel}) -> None:",
            f"{INDENT * 2}self._channel = channel",
        ]
        for method in service.methods:
            request = self.message(method.request.module, method.request.qualname)
            response = self.message(method.response.module, method.response.qualname)
            cardinality = method.cardinality
            if cardinality is Cardinality.UNARY:
                parameter, call, returns = f"request: {request}", "unary_unary", response
            elif cardinality is Cardinality.SERVER_STREAM:
                stream = self.runtime("client", "ServerStreamCall")
                parameter, call, returns = (
                    f"request: {request}",
                    "unary_stream",
                    f"{stream}[{response}]",
                )
            elif cardinality is Cardinality.CLIENT_STREAM:
                requests = self.runtime("client", "RequestStream")
                parameter, call, returns = (
                    f"requests: {requests}[{request}]",
                    "stream_unary",
                    response,
                )
            else:
                requests = self.runtime("client", "RequestStream")
                stream = self.runtime("client", "BidiStreamCall")
                parameter = f"requests: {requests}[{request}] | None = None"
                call, returns = "stream_stream", f"{stream}[{request}, {response}]"
            is_async = not cardinality.server_streams
            lines.append("")
            lines.extend(self._decorators(method))
            lines.extend(
                _signature(
                    INDENT,
                    ("async def " if is_async else "def ") + method.handler_name,
                    [
                        "self",
                        parameter,
                        "*",
                        "timeout: float | None = None",
                        f"metadata: {metadata} | None = None",
                    ],
                    returns,
                    self.width,
                )
            )
            doc = f"Call ``{method.path}``."
            if method.doc:
                doc = f"{method.doc}\n\n{doc}"
            lines.extend(docstring(doc, INDENT * 2))
            argument = "requests" if cardinality.client_streams else "request"
            lines.extend(
                _call(
                    INDENT * 2,
                    f"return {'await ' if is_async else ''}self._channel.{call}",
                    [
                        f"{service.routes_class}.{method.constant_name}",
                        argument,
                        "timeout=timeout",
                        "metadata=metadata",
                    ],
                    self.width,
                )
            )
        return lines

    def register_function(self, service: Service) -> list[str]:
        router = self.runtime("routing", "Router")
        lines = _signature(
            "",
            f"def {service.register_function}",
            [f"router: {router}", f"implementation: {service.base_class}"],
            "None",
            self.width,
        )
        lines += docstring(
            f"Bind `implementation` to every route of `{service.full_name}` on `router`.\n\n"
            "Also registers this file's push types. Raises ``ConfigurationError`` when\n"
            "the service is already registered or a wire id collides.",
            INDENT,
        )
        add = f"{INDENT}router.add_service({service.table_constant}, implementation)"
        if len(add) <= self.width:
            lines.append(add)
        else:
            lines += _call(
                INDENT, "router.add_service", [service.table_constant, "implementation"], self.width
            )
        lines.append(f"{INDENT}router.add_push_types(PUSH_TYPES)")
        return lines


def _signature(
    indent: str, head: str, parameters: Sequence[str], returns: str, width: int
) -> list[str]:
    """A ``def`` line, flat when it fits, else one parameter per line (as ruff lays it out)."""
    flat = f"{indent}{head}({', '.join(parameters)}) -> {returns}:"
    if len(flat) <= width:
        return [flat]
    lines = [f"{indent}{head}("]
    for parameter in parameters:
        lines.extend(_parameter(indent + INDENT, parameter, width))
    closing = f"{indent}) -> {returns}:"
    if len(closing) <= width or "[" not in returns:
        lines.append(closing)
        return lines
    # Split the return annotation's subscript, as ruff does for a long one.
    name, _, rest = returns.partition("[")
    items = rest[:-1].split(", ")
    lines.append(f"{indent}) -> {name}[")
    if len(items) == 1:
        lines.append(f"{indent}{INDENT}{items[0]}")
    else:
        lines.extend(f"{indent}{INDENT}{item}," for item in items)
    lines.append(f"{indent}]:")
    return lines


def _parameter(indent: str, parameter: str, width: int) -> list[str]:
    """One parameter line of an exploded signature; a too-long ``name: G[X]`` is split.

    Only the shapes the renderer produces are handled: ``name: G[X]``,
    ``name: G[X] | None = None`` and annotations without a subscript (which
    ruff cannot split either).
    """
    line = f"{indent}{parameter},"
    if len(line) <= width or "[" not in parameter:
        return [line]
    name, _, annotation = parameter.partition(": ")
    annotation, has_default, default = annotation.partition(" = ")
    head, has_union, tail = annotation.partition(" | ")
    generic, _, argument = head.partition("[")
    split = [f"{indent}{name}: {generic}[", f"{indent}{INDENT}{argument[:-1]}"]
    suffix = f" = {default}" if has_default else ""
    if not has_union:
        return [*split, f"{indent}]{suffix},"]
    # ruff breaks at the union first and splits the subscript only if needed.
    rest = f"{indent}| {tail}{suffix},"
    first = f"{indent}{name}: {head}"
    if len(first) <= width:
        return [first, rest]
    return [*split, f"{indent}]", rest]


def render_file(model: File, line_length: int = DEFAULT_WIDTH) -> str:
    """The complete text of the ``_flare.py`` module for `model`, laid out for `line_length`."""
    return _Renderer(model, line_length).render()
