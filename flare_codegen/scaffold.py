"""``flare scaffold``: a handler module for a service, written once and kept in step.

`render_module` writes a new module: a class deriving from the generated
handler base, with one ``async def`` per route -- typed exactly as the base
declares it (the four cardinalities: ``request`` or ``requests:
AsyncIterator[...]`` in, a response or ``AsyncIterator[...]`` out) -- whose
body raises `NotImplementedError` (the runtime answers UNIMPLEMENTED; a
server-streaming stub also holds a bare ``yield``, which makes it an async
generator).

`update_module` brings a module the user has since edited in step with a
changed schema, as a concrete-syntax-tree edit with libcst, so everything it
does not change is kept byte for byte -- bodies, comments, blank lines,
formatting, other methods and classes:

* a route without a method gets one, appended to the class;
* a method whose request or response type or cardinality changed gets the new
  annotations (and ``async`` when a coroutine is now required); its parameter
  names and body are kept. When the cardinality changed, a comment above it
  says what the body must now do;
* a public method taking a ``context`` that matches no route any more is left
  in place, marked with a ``# flare scaffold:`` comment, and reported;
* imports the new annotations need are added as lines of their own after the
  last import. Imports the replaced annotations used are left in place (a
  linter's unused-import fix removes them), like every line the user wrote.

Types are compared by what names resolve to through the module's imports
(``chat_pb2.SendRequest`` and ``SendRequest`` imported from ``chat_pb2`` are
the same type; ``typing.AsyncIterator`` is ``collections.abc.AsyncIterator``;
an ``AsyncGenerator[X, None]`` return satisfies ``AsyncIterator[X]``), so a
method the user typed their own way is not rewritten.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import libcst as cst

from flare_codegen.errors import CodegenError
from flare_codegen.model import File, Method, Service
from flare_codegen.render import INDENT, Imports, _signature
from flare_runtime.routing import Cardinality

WIDTH = 100
MARK = "# flare scaffold:"
"""How every comment the scaffolder writes starts (and how it recognises its own)."""
_ITERATORS = {
    "collections.abc.AsyncIterator",
    "typing.AsyncIterator",
    "typing_extensions.AsyncIterator",
}
_GENERATORS = {"collections.abc.AsyncGenerator", "typing.AsyncGenerator"}
_CONTEXT = "flare_runtime.context.CallContext"


class ScaffoldError(CodegenError):
    """The service or the module to update cannot be found or parsed."""


@dataclass(slots=True)
class ScaffoldReport:
    """What `update_module` did, by handler name."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    """Methods matching no route any more (left in place, marked)."""

    @property
    def changed(self) -> bool:
        """Whether the module text changed."""
        return bool(self.added or self.updated or self.removed)


def find_service(files: Sequence[File], name: str) -> tuple[File, Service]:
    """The service called `name` (full name, or a unique short name) and its file."""
    found = [
        (file, service)
        for file in files
        for service in file.services
        if name in (service.full_name, service.name)
    ]
    if len(found) == 1:
        return found[0]
    services = sorted(service.full_name for file in files for service in file.services)
    if not found:
        raise ScaffoldError(f"no service {name} in the schema (it has: {', '.join(services)})")
    names = ", ".join(service.full_name for _, service in found)
    raise ScaffoldError(f"{name} names several services ({names}): give the full name")


def flare_module(file: File) -> str:
    """The dotted name of `file`'s generated ``_flare`` module."""
    return file.output_path.removesuffix(".py").replace("/", ".")


# ---------------------------------------------------------------------------- a new module


def render_module(file: File, service: Service, class_name: str | None = None) -> str:
    """The text of a new handler module for `service` (see the module docstring)."""
    class_name = class_name or service.name
    imports = Imports({class_name}, WIDTH)
    base = imports.name(flare_module(file), service.base_class)
    names = _Names(imports)
    methods: list[str] = []
    for method in service.methods:
        methods += ["", *_method_lines(method, names, INDENT)]
    doc = [
        f'"""Handlers of `{service.full_name}`.',
        "",
        "Scaffolded by ``flare scaffold``: write the bodies. Run it again after the schema",
        "changes: it adds the new methods and updates changed signatures, and never touches",
        "a body.",
        '"""',
    ]
    return "\n".join(
        [
            *doc,
            "",
            "from __future__ import annotations",
            "",
            *imports.render(),
            "",
            "",
            f"class {class_name}({base}):",
            f'{INDENT}"""Serves `{service.full_name}`."""',
            *methods,
            "",
        ]
    )


class _Names:
    """Spells the types a handler signature needs in a module (`Imports` of a new one)."""

    def __init__(self, imports: Imports) -> None:
        self._imports = imports

    def message(self, module: str, qualname: str) -> str:
        return f"{self._imports.pb2(module)}.{qualname}"

    def iterator(self) -> str:
        return self._imports.name("collections.abc", "AsyncIterator")

    def context(self) -> str:
        return self._imports.name("flare_runtime.context", "CallContext")


def _annotations(method: Method, names: _Names) -> tuple[str, str, str]:
    """(parameter name, its annotation, the return annotation) of `method`'s handler."""
    request = names.message(method.request.module, method.request.qualname)
    response = names.message(method.response.module, method.response.qualname)
    cardinality = method.cardinality
    if cardinality.client_streams:
        parameter = ("requests", f"{names.iterator()}[{request}]")
    else:
        parameter = ("request", request)
    returns = f"{names.iterator()}[{response}]" if cardinality.server_streams else response
    return parameter[0], parameter[1], returns


def _method_lines(method: Method, names: _Names, indent: str) -> list[str]:
    parameter, annotation, returns = _annotations(method, names)
    lines = _signature(
        indent,
        f"async def {method.handler_name}",
        ["self", f"{parameter}: {annotation}", f"context: {names.context()}"],
        returns,
        WIDTH,
    )
    lines.append(f"{indent}{INDENT}raise NotImplementedError")
    if method.cardinality.server_streams:
        lines.append(f"{indent}{INDENT}yield  # an async generator: yield each response")
    return lines


# ---------------------------------------------------------------------------- updating


def update_module(text: str, file: File, service: Service) -> tuple[str, ScaffoldReport]:
    """`text` (a handler module) brought in step with `service` (see the module docstring).

    Raises `ScaffoldError` when `text` does not parse or has no class deriving
    from the service's generated base.
    """

    try:
        module = cst.parse_module(text)
    except cst.ParserSyntaxError as error:
        raise ScaffoldError(
            f"cannot parse it: {error.message} (line {error.raw_line}:{error.raw_column})"
        ) from None
    resolver = _Resolver(module)
    transformer = _Updater(file, service, resolver)
    updated = module.visit(transformer)
    if not transformer.found:
        raise ScaffoldError(f"no class deriving from {service.base_class} in it")
    updated = _with_imports(updated, resolver)
    return updated.code, transformer.report


class _Resolver:
    """What the module's top-level imports bind each local name to, and new imports."""

    def __init__(self, module: cst.Module) -> None:

        self.bound: dict[str, str] = {}
        """Local name -> the dotted name it stands for."""
        self.new_imports: list[tuple[str, str, str]] = []
        """(module, name, local name) to add, in the order first needed."""
        self.defined: set[str] = set()
        for statement in module.body:
            if isinstance(statement, cst.SimpleStatementLine):
                for small in statement.body:
                    if isinstance(small, cst.Import):
                        for alias in small.names:
                            dotted = _dotted(alias.name)
                            if alias.asname is not None:
                                self.bound[_name_of(alias.asname)] = dotted
                            else:
                                first = dotted.split(".")[0]
                                self.bound[first] = first
                    elif isinstance(small, cst.ImportFrom) and small.module is not None:
                        if small.relative or isinstance(small.names, cst.ImportStar):
                            continue
                        base = _dotted(small.module)
                        for alias in small.names:
                            name = _dotted(alias.name)
                            local = name if alias.asname is None else _name_of(alias.asname)
                            self.bound[local] = f"{base}.{name}"
            elif isinstance(statement, cst.ClassDef | cst.FunctionDef):
                self.defined.add(statement.name.value)

    def canonical(self, node: cst.BaseExpression) -> str:
        """`node` with every name resolved through the imports, as text."""

        if isinstance(node, cst.Name):
            return self.bound.get(node.value, node.value)
        if isinstance(node, cst.Attribute):
            return f"{self.canonical(node.value)}.{node.attr.value}"
        if isinstance(node, cst.Subscript):
            items = []
            for element in node.slice:
                if isinstance(element.slice, cst.Index):
                    items.append(self.canonical(element.slice.value))
            value = self.canonical(node.value)
            if value in _ITERATORS:
                value = "collections.abc.AsyncIterator"
            return f"{value}[{', '.join(items)}]"
        if isinstance(node, cst.SimpleString):  # a quoted annotation
            try:
                return self.canonical(cst.parse_expression(node.evaluated_value))  # type: ignore[arg-type]
            except cst.ParserSyntaxError:
                return node.value
        return cst.Module([]).code_for_node(node)

    def lookup(self, dotted: str) -> str | None:
        """How the module already spells `dotted` (``pkg.mod.Name``), if it can."""
        for local, bound in self.bound.items():
            if bound == dotted:
                return local
        for local, bound in self.bound.items():
            if dotted.startswith(f"{bound}."):
                return local + dotted[len(bound) :]
        return None

    def import_name(self, dotted: str) -> str:
        """Add ``from parent import leaf`` (aliased if the name is taken); its local name."""
        module, _, name = dotted.rpartition(".")
        local = name
        while local in self.bound or local in self.defined:
            local = f"_{local}"
        self.bound[local] = dotted
        self.new_imports.append((module, name, local))
        return local

    def spell(self, dotted: str) -> str:
        """`lookup`, else `import_name`."""
        return self.lookup(dotted) or self.import_name(dotted)


class _Spelling(_Names):
    """Spells types in an existing module through its `_Resolver`."""

    def __init__(self, resolver: _Resolver) -> None:
        self._resolver = resolver

    def message(self, module: str, qualname: str) -> str:
        resolver = self._resolver
        return resolver.lookup(f"{module}.{qualname}") or f"{resolver.spell(module)}.{qualname}"

    def iterator(self) -> str:
        for dotted in ("collections.abc.AsyncIterator", "typing.AsyncIterator"):
            local = self._resolver.lookup(dotted)
            if local is not None:
                return local
        return self._resolver.import_name("collections.abc.AsyncIterator")

    def context(self) -> str:
        return self._resolver.spell(_CONTEXT)


def _expected(method: Method) -> tuple[str, str]:
    """The canonical (parameter annotation, return annotation) of `method`'s handler."""
    request = f"{method.request.module}.{method.request.qualname}"
    response = f"{method.response.module}.{method.response.qualname}"
    iterator = "collections.abc.AsyncIterator"
    parameter = f"{iterator}[{request}]" if method.cardinality.client_streams else request
    returns = f"{iterator}[{response}]" if method.cardinality.server_streams else response
    return parameter, returns


def _dotted(node: cst.BaseExpression) -> str:

    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        return f"{_dotted(node.value)}.{node.attr.value}"
    raise ScaffoldError("an import names something that is not a dotted name")


def _name_of(asname: cst.AsName) -> str:

    if isinstance(asname.name, cst.Name):
        return asname.name.value
    raise ScaffoldError("an import is aliased to something that is not a name")


class _Updater(cst.CSTTransformer):
    """Rewrites the handler class of one service (see `update_module`)."""

    def __init__(self, file: File, service: Service, resolver: _Resolver) -> None:
        super().__init__()
        self.file = file
        self.service = service
        self.resolver = resolver
        self.report = ScaffoldReport()
        self.found = False
        self._depth = 0

    def visit_ClassDef(self, node: cst.ClassDef) -> bool:  # noqa: N802 -- libcst's visitor names
        self._depth += 1
        return self._depth == 1  # only top-level classes are handler classes

    def leave_ClassDef(  # noqa: N802
        self, original: cst.ClassDef, updated: cst.ClassDef
    ) -> cst.ClassDef:
        self._depth -= 1
        if self._depth or self.found or not self._is_handler_class(original):
            return updated
        self.found = True
        return self._update_class(updated)

    def _is_handler_class(self, node: cst.ClassDef) -> bool:
        wanted = f"{flare_module(self.file)}.{self.service.base_class}"
        return any(
            self.resolver.canonical(base.value) in (wanted, self.service.base_class)
            for base in node.bases
        )

    def _update_class(self, node: cst.ClassDef) -> cst.ClassDef:

        routes = {method.handler_name: method for method in self.service.methods}
        seen: set[str] = set()
        body: list[cst.BaseStatement] = []
        block = node.body
        if not isinstance(block, cst.IndentedBlock):
            raise ScaffoldError(f"class {node.name.value} is written on one line")
        for statement in block.body:
            kept = statement
            if isinstance(statement, cst.FunctionDef):
                name = statement.name.value
                method = routes.get(name)
                if method is not None:
                    seen.add(name)
                    kept = self._update_method(statement, method)
                elif _looks_like_a_handler(statement):
                    kept = self._mark_removed(statement)
            body.append(kept)
        spelling = _Spelling(self.resolver)
        for method in self.service.methods:
            if method.handler_name in seen:
                continue
            text = "\n".join(_method_lines(method, spelling, "")) + "\n"
            added = cst.ensure_type(cst.parse_statement(text), cst.FunctionDef)
            body.append(added.with_changes(leading_lines=[cst.EmptyLine(indent=False)]))
            self.report.added.append(method.handler_name)
        return node.with_changes(body=block.with_changes(body=body))

    def _update_method(self, node: cst.FunctionDef, method: Method) -> cst.FunctionDef:

        parameter, returns = _expected(method)
        changes: dict[str, object] = {}
        params = list(node.params.params)
        if (
            len(params) >= 2
            and params[1].annotation is not None
            and self.resolver.canonical(params[1].annotation.annotation) != parameter
        ):
            _, text, _ = _annotations(method, _Spelling(self.resolver))
            params[1] = params[1].with_changes(
                annotation=cst.Annotation(cst.parse_expression(text))
            )
            changes["params"] = node.params.with_changes(params=params)
        if node.returns is not None and not self._same_return(node.returns.annotation, returns):
            _, _, text = _annotations(method, _Spelling(self.resolver))
            changes["returns"] = cst.Annotation(cst.parse_expression(text))
        if node.asynchronous is None and not method.cardinality.server_streams:
            changes["asynchronous"] = cst.Asynchronous()
        if not changes:
            return node
        self.report.updated.append(method.handler_name)
        was = self._cardinality_of(node)
        if was is not None and was is not method.cardinality:
            what = (
                "yield each response"
                if method.cardinality.server_streams
                else "return one response"
            )
            comment = (
                f"{MARK} {method.name} is now {method.cardinality.value.replace('_', '-')}: "
                f"{what} (the body was not changed)"
            )
            changes["leading_lines"] = [
                *node.leading_lines,
                cst.EmptyLine(indent=True, comment=cst.Comment(comment)),
            ]
        return node.with_changes(**changes)

    def _cardinality_of(self, node: cst.FunctionDef) -> Cardinality | None:
        """The cardinality `node`'s annotations declare, if they say."""
        params = node.params.params
        if len(params) < 2 or params[1].annotation is None or node.returns is None:
            return None
        takes = self.resolver.canonical(params[1].annotation.annotation)
        gives = self.resolver.canonical(node.returns.annotation)
        client = takes.startswith("collections.abc.AsyncIterator[")
        server = gives.startswith("collections.abc.AsyncIterator[") or gives.split("[")[0] in (
            _GENERATORS
        )
        if client:
            return Cardinality.BIDI_STREAM if server else Cardinality.CLIENT_STREAM
        return Cardinality.SERVER_STREAM if server else Cardinality.UNARY

    def _same_return(self, node: cst.BaseExpression, expected: str) -> bool:

        if self.resolver.canonical(node) == expected:
            return True
        # AsyncGenerator[X, None] (or [X]) satisfies AsyncIterator[X].
        if isinstance(node, cst.Subscript) and self.resolver.canonical(node.value) in _GENERATORS:
            first = node.slice[0].slice
            if isinstance(first, cst.Index):
                item = self.resolver.canonical(first.value)
                return expected == f"collections.abc.AsyncIterator[{item}]"
        return False

    def _mark_removed(self, node: cst.FunctionDef) -> cst.FunctionDef:

        name = node.name.value
        self.report.removed.append(name)
        if any(
            line.comment is not None and line.comment.value.startswith(MARK)
            for line in node.leading_lines
        ):
            return node  # marked by an earlier run
        comment = (
            f"{MARK} no route of {self.service.full_name} is handled by {name} any more "
            "(nothing calls it)"
        )
        return node.with_changes(
            leading_lines=[
                *node.leading_lines,
                cst.EmptyLine(indent=True, comment=cst.Comment(comment)),
            ]
        )


def _looks_like_a_handler(node: cst.FunctionDef) -> bool:
    """A public method taking ``(self, request_or_requests, context)``."""
    params = node.params.params
    return (
        not node.name.value.startswith("_")
        and len(params) == 3
        and params[2].name.value == "context"
    )


def _with_imports(module: cst.Module, resolver: _Resolver) -> cst.Module:
    """`module` with the imports its new annotations need, after its last import."""

    if resolver.new_imports:
        lines = [
            cst.parse_statement(
                f"from {module_name} import {name}"
                + ("" if local == name else f" as {local}")
                + "\n"
            )
            for module_name, name, local in resolver.new_imports
        ]
        body = list(module.body)
        last = max(
            (
                index
                for index, statement in enumerate(body)
                if isinstance(statement, cst.SimpleStatementLine)
                and any(isinstance(small, cst.Import | cst.ImportFrom) for small in statement.body)
            ),
            default=-1,
        )
        if last == -1:
            # After a module docstring, if there is one.
            first = body[0] if body else None
            docstring = (
                isinstance(first, cst.SimpleStatementLine)
                and isinstance(first.body[0], cst.Expr)
                and isinstance(first.body[0].value, cst.SimpleString)
            )
            last = 0 if docstring else -1
            if docstring:
                spaced = cst.ensure_type(lines[0], cst.SimpleStatementLine)
                lines[0] = spaced.with_changes(leading_lines=[cst.EmptyLine(indent=False)])
        module = module.with_changes(body=[*body[: last + 1], *lines, *body[last + 1 :]])
    return module
