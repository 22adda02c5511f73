"""Measure the shape of the taskhead package: modules, lines, import levels and circles, long functions.

Standard library only (``ast``), so the same code measures the package before and after a reshaping:

    python tools/shape.py                 # Markdown report of src/taskhead
    python tools/shape.py --json          # the same figures as JSON
    python tools/shape.py --root PATH     # another copy of the package (PATH is the `taskhead` folder)

Definitions (the report repeats them):

* A module is a ``.py`` file; module counts leave out ``__init__.py`` and ``__main__.py`` (given apart).
* An intra-package import is an edge from the importing module to the module it names: ``from a.b import c``
  goes to ``a.b.c`` when that is a module, else to ``a.b``; parent packages run by the import are not
  counted as edges. Relative imports are resolved.
* Import kinds: *module-level* imports run when the module is imported (module body, class bodies, ``if`` /
  ``try`` at module level); *function-level* imports sit inside a ``def``; *type-only* imports sit under
  ``if TYPE_CHECKING:`` and never run. Levels and circles are measured on the module-level edges, then on
  module-level plus function-level edges; type-only edges are counted, never followed.
* Import levels: modules in the longest chain of imports, where the modules of one circle (a strongly
  connected component) count as one level.
* Import circles: the strongly connected components of more than one module, and the elementary cycles
  within them (shortest first), each edge with the file:line of its import.
* Function length: ``def`` line to last line (decorators not counted); methods and nested functions are
  measured on their own, nested ones are also inside their parent's length.
* Task protocol: the ``def``s of ``class Task`` in the ``tasks`` package; probes: ``getattr``/``hasattr``
  calls whose first argument is ``task`` or ends in ``.task`` (``self.task``, ``run.task``).
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PACKAGES = ("root", "data", "tasks", "retrieval", "serving")
LONG_MODULE = 500
TOP_FUNCTIONS = 20
CYCLE_CAP = 1000  # elementary cycles enumerated per graph at most (the count is then "at least")


@dataclass
class Edge:
    target: str
    kind: str  # "module", "function" or "type"
    line: int


@dataclass
class Module:
    name: str  # taskhead.workflows.validate
    path: Path  # relative to the root's parent, e.g. taskhead/data/splits.py
    tree: ast.Module
    lines: int
    edges: list[Edge] = field(default_factory=list)

    @property
    def package(self) -> str:
        parts = self.name.split(".")
        is_init = self.path.name == "__init__.py"
        depth = len(parts) - (0 if is_init else 1)
        return "root" if depth <= 1 else parts[1]

    @property
    def counted(self) -> bool:
        return self.path.name not in ("__init__.py", "__main__.py")


# ---------------------------------------------------------------- reading


def read_modules(root: Path) -> dict[str, Module]:
    """Every ``.py`` file under ``root`` (the package folder), parsed, keyed by dotted module name."""
    modules: dict[str, Module] = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent)
        parts = list(rel.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text, filename=str(path))
        modules[".".join(parts)] = Module(".".join(parts), rel, tree, len(text.splitlines()))
    for module in modules.values():
        module.edges = list(_imports(module, modules))
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk_imports(node: ast.AST, kind: str) -> Any:
    """Yield ``(import node, kind)`` for every import below ``node``; ``kind`` as in the module docstring."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child, kind
        elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            yield from _walk_imports(child, "type" if kind == "type" else "function")
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.body:
                yield from _walk_imports(ast.Module(body=[stmt], type_ignores=[]), "type")
            for stmt in child.orelse:
                yield from _walk_imports(ast.Module(body=[stmt], type_ignores=[]), kind)
        else:
            yield from _walk_imports(child, kind)


def _imports(module: Module, modules: dict[str, Module]) -> Any:
    """The intra-package edges of ``module``."""
    is_package = module.path.name == "__init__.py"
    for node, kind in _walk_imports(module.tree, "module"):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = module.name.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        for name in dict.fromkeys(names):
            while name and name not in modules and "." in name:
                name = name.rsplit(".", 1)[0]  # `import taskhead.x.y as z` of a non-module attribute
            if name in modules and name != module.name:
                yield Edge(name, kind, node.lineno)


# ---------------------------------------------------------------- graphs


Graph = dict[str, dict[str, str]]  # {node: {imported node: "file:line" of the first such import}}


def unit(module: Module, collapse: bool) -> str:
    """The graph node of a module: itself, or with ``collapse`` its subpackage (root modules stay apart)."""
    if collapse and module.package != "root":
        return module.name.split(".")[0] + "." + module.package
    return module.name


def graph(modules: dict[str, Module], kinds: set[str], *, collapse: bool = False) -> Graph:
    """The import graph over edges of the given kinds; ``collapse``: subpackages as single nodes."""
    out: Graph = {unit(m, collapse): {} for m in modules.values()}
    for module in modules.values():
        source = unit(module, collapse)
        for edge in module.edges:
            target = unit(modules[edge.target], collapse)
            if edge.kind in kinds and target != source:
                out[source].setdefault(target, f"{module.path}:{edge.line}")
    return out


def components(g: Graph) -> list[list[str]]:
    """Strongly connected components (Tarjan), each sorted, successors before the modules that import them."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    result: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(g[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            result.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(g) + 100))
    for v in sorted(g):
        if v not in index:
            visit(v)
    return result


def levels(g: Graph) -> tuple[int, list[list[str]]]:
    """The number of import levels and one longest chain (a list of components, importer first)."""
    comps = components(g)
    comp_of = {v: i for i, comp in enumerate(comps) for v in comp}
    depth: dict[int, int] = {}
    below: dict[int, int | None] = {}
    for i, comp in enumerate(comps):  # Tarjan emits successors first
        succ = {comp_of[w] for v in comp for w in g[v]} - {i}
        best = max(succ, key=lambda j: (depth[j], -j), default=None)
        depth[i] = 1 + (depth[best] if best is not None else 0)
        below[i] = best
    if not depth:
        return 0, []
    top: int | None = max(depth, key=lambda i: (depth[i], -i))
    chain = []
    while top is not None:
        chain.append(comps[top])
        top = below[top]
    return len(chain), chain


def cycles(g: Graph, cap: int = CYCLE_CAP) -> tuple[list[list[str]], bool]:
    """Elementary cycles (each once, starting at its least module), shortest first; ``True`` when capped."""
    comp_of = {v: i for i, comp in enumerate(components(g)) for v in comp}
    found: list[list[str]] = []
    for start in sorted(g):
        path = [start]

        def extend(v: str, start: str = start, path: list[str] = path) -> bool:
            for w in sorted(g[v]):
                if comp_of[w] != comp_of[start] or w < start:
                    continue
                if w == start:
                    found.append(list(path))
                    if len(found) >= cap:
                        return True
                elif w not in path:
                    path.append(w)
                    if extend(w):
                        return True
                    path.pop()
            return False

        if extend(start):
            return sorted(found, key=lambda c: (len(c), c)), True
    return sorted(found, key=lambda c: (len(c), c)), False


# ---------------------------------------------------------------- other figures


def functions(modules: dict[str, Module]) -> list[tuple[int, str, int, str]]:
    """``(lines, path, line, qualified name)`` of every function and method, longest first."""
    out = []

    def walk(node: ast.AST, prefix: str, module: Module) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                qual = f"{prefix}{child.name}"
                out.append(
                    (
                        (child.end_lineno or child.lineno) - child.lineno + 1,
                        str(module.path),
                        child.lineno,
                        qual,
                    )
                )
                walk(child, f"{qual}.", module)
            elif isinstance(child, ast.ClassDef):
                walk(child, f"{prefix}{child.name}.", module)
            else:
                walk(child, prefix, module)

    for module in modules.values():
        walk(module.tree, "", module)
    return sorted(out, key=lambda f: (-f[0], f[1], f[2]))


def task_protocol(modules: dict[str, Module]) -> dict[str, Any]:
    """The methods and attributes of ``class Task`` in the ``tasks`` package (empty where there is none)."""
    found = [
        (m, n)
        for m in modules.values()
        if m.package == "tasks"
        for n in ast.walk(m.tree)
        if isinstance(n, ast.ClassDef) and n.name == "Task"
    ]
    if not found:
        return {"module": None, "methods": [], "properties": [], "attributes": []}
    base, cls = found[0]
    defs = [n for n in cls.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    props = [n.name for n in defs if any(ast.unparse(d) == "property" for d in n.decorator_list)]
    attrs = [n.target.id for n in cls.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)]
    return {
        "module": str(base.path),
        "methods": [n.name for n in defs],
        "properties": props,
        "attributes": attrs,
    }


def _is_task(node: ast.expr) -> bool:
    return (isinstance(node, ast.Name) and node.id == "task") or (
        isinstance(node, ast.Attribute) and node.attr == "task"
    )


def task_probes(modules: dict[str, Module]) -> list[dict[str, Any]]:
    """``getattr``/``hasattr`` calls on a task: file, line, function and the attribute probed."""
    out = []
    for module in modules.values():
        for node in ast.walk(module.tree):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "hasattr")
                and len(node.args) >= 2
                and _is_task(node.args[0])
            ):
                continue
            arg = node.args[1]
            name = arg.value if isinstance(arg, ast.Constant) else f"<{ast.unparse(arg)}>"
            out.append(
                {"call": node.func.id, "path": str(module.path), "line": node.lineno, "attribute": name}
            )
    return sorted(out, key=lambda p: (p["path"], p["line"]))


# ---------------------------------------------------------------- the report


def _graph_figures(modules: dict[str, Module], kinds: set[str], *, collapse: bool = False) -> dict[str, Any]:
    g = graph(modules, kinds, collapse=collapse)
    depth, chain = levels(g)
    found, capped = cycles(g)
    circles = sorted(c for c in components(g) if len(c) > 1)
    pkg: dict[str, int] = defaultdict(int)
    for v, targets in graph(modules, kinds).items():
        for w in targets:
            a, b = modules[v].package, modules[w].package
            if a != b:
                pkg[f"{a} -> {b}"] += 1
    return {
        "edges": sum(map(len, g.values())),
        "levels": depth,
        "longest_chain": chain,
        "circles": circles,
        "cycles": [[(v, g[v][w]) for v, w in zip(c, [*c[1:], c[0]], strict=True)] for c in found],
        "cycles_capped": capped,
        "package_edges": dict(sorted(pkg.items())),
    }


def _shown(path: Path) -> str:
    """``path`` relative to the working directory where it lies below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def measure(root: Path) -> dict[str, Any]:
    """All figures of the package folder ``root`` as a JSON-ready dict."""
    modules = read_modules(root)
    per_package = {
        p: sorted(m.name for m in modules.values() if m.package == p and m.counted) for p in PACKAGES
    }
    others = sorted({m.package for m in modules.values()} - set(PACKAGES))
    per_package.update(
        {p: sorted(m.name for m in modules.values() if m.package == p and m.counted) for p in others}
    )
    funcs = functions(modules)
    kinds = [e.kind for m in modules.values() for e in m.edges]
    return {
        "root": _shown(root),
        "modules": {p: len(names) for p, names in per_package.items()},
        "module_names": per_package,
        "init_and_main_files": sum(not m.counted for m in modules.values()),
        "total_lines": sum(m.lines for m in modules.values()),
        "import_edges": {k: kinds.count(k) for k in ("module", "function", "type")},
        "module_level": _graph_figures(modules, {"module"}),
        "with_function_level": _graph_figures(modules, {"module", "function"}),
        "packages_module_level": _graph_figures(modules, {"module"}, collapse=True),
        "packages_with_function_level": _graph_figures(modules, {"module", "function"}, collapse=True),
        "longest_functions": [
            {"path": p, "line": line, "name": name, "lines": n} for n, p, line, name in funcs[:TOP_FUNCTIONS]
        ],
        "functions_over_60": sum(f[0] > 60 for f in funcs),
        "long_modules": sorted(
            ({"path": str(m.path), "lines": m.lines} for m in modules.values() if m.lines > LONG_MODULE),
            key=lambda m: -m["lines"],
        ),
        "task_protocol": task_protocol(modules),
        "task_probes": task_probes(modules),
    }


def _chain_text(chain: list[list[str]]) -> str:
    return " -> ".join(c[0] if len(c) == 1 else "{" + ", ".join(c) + "}" for c in chain)


def _graph_markdown(title: str, fig: dict[str, Any], shown: int) -> list[str]:
    out = [f"### {title}", ""]
    out.append(f"- edges: {fig['edges']}; import levels: **{fig['levels']}**")
    out.append(f"- longest chain: {_chain_text(fig['longest_chain'])}")
    count = f"{'at least ' if fig['cycles_capped'] else ''}{len(fig['cycles'])}"
    out.append(
        f"- circles (components of several nodes): **{len(fig['circles'])}**; elementary cycles: {count}"
    )
    out += [f"  - {{{', '.join(c)}}}" for c in fig["circles"]]
    if fig["cycles"]:
        first = f"; the first {shown}" if len(fig["cycles"]) > shown else ""
        out.append(f"- cycles, shortest first (each step with the file:line of its first import){first}:")
        for cyc in fig["cycles"][:shown]:
            out.append("  - " + " -> ".join(f"{v} ({where})" for v, where in cyc) + f" -> {cyc[0][0]}")
    pairs = ", ".join(f"{k}: {v}" for k, v in fig["package_edges"].items())
    out.append(f"- imports across packages (module pairs): {pairs}")
    return [*out, ""]


def _modules_markdown(fig: dict[str, Any]) -> list[str]:
    out = ["## Modules", "", "| package | modules |", "|---|---|"]
    out += [f"| {p} | {n} |" for p, n in fig["modules"].items()]
    extra = f"(+ {fig['init_and_main_files']} `__init__`/`__main__`)"
    out += [f"| **all** | **{sum(fig['modules'].values())}** {extra} |", ""]
    out.append(f"Total lines (all `.py` files): **{fig['total_lines']}**")
    long = ", ".join(f"`{m['path']}` {m['lines']}" for m in fig["long_modules"])
    out.append(f"Modules over {LONG_MODULE} lines: **{len(fig['long_modules'])}**: {long or 'none'}")
    return [*out, ""]


def _imports_markdown(fig: dict[str, Any]) -> list[str]:
    e = fig["import_edges"]
    out = ["## Imports", ""]
    out.append(
        f"Intra-package imports (one per imported module and statement): module-level {e['module']}, "
        f"function-level {e['function']}, type-only {e['type']}."
    )
    out.append("")
    out += _graph_markdown("Modules: module-level imports", fig["module_level"], 50)
    out += _graph_markdown("Modules: module-level and function-level imports", fig["with_function_level"], 30)
    out += [
        "Below, each subpackage (data, tasks, retrieval, serving) is one node; root modules stay apart.",
        "",
    ]
    out += _graph_markdown("Packages: module-level imports", fig["packages_module_level"], 30)
    both = fig["packages_with_function_level"]
    return out + _graph_markdown("Packages: module-level and function-level imports", both, 30)


def _functions_markdown(fig: dict[str, Any]) -> list[str]:
    out = [f"## The {TOP_FUNCTIONS} longest functions", ""]
    out += [f"Functions over 60 lines: **{fig['functions_over_60']}**", ""]
    out += ["| lines | function | where |", "|---|---|---|"]
    out += [f"| {f['lines']} | `{f['name']}` | {f['path']}:{f['line']} |" for f in fig["longest_functions"]]
    return [*out, ""]


def _protocol_markdown(fig: dict[str, Any]) -> list[str]:
    tp = fig["task_protocol"]
    methods = [m for m in tp["methods"] if m != "__init__"]
    out = ["## Task protocol", ""]
    out.append(
        f"`class Task` ({tp['module']}): **{len(methods)}** methods besides `__init__` "
        f"({len(tp['properties'])} of them properties): {', '.join(methods)}; "
        f"attributes: {', '.join(tp['attributes'])}"
    )
    probes = fig["task_probes"]
    names = sorted({p["attribute"] for p in probes})
    out += [
        "",
        f"Probes on a task: **{len(probes)}** calls, **{len(names)}** attributes: {', '.join(names)}",
    ]
    out += ["", *(f"- {p['path']}:{p['line']} `{p['call']}` {p['attribute']}" for p in probes)]
    return out


def markdown(fig: dict[str, Any]) -> str:
    """The figures as a Markdown report."""
    out = [
        f"# Shape of `{fig['root']}`",
        "",
        "Measured by `tools/shape.py` (definitions in its docstring).",
        "",
    ]
    out += (
        _modules_markdown(fig) + _imports_markdown(fig) + _functions_markdown(fig) + _protocol_markdown(fig)
    )
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default = Path(__file__).resolve().parent.parent / "src" / "taskhead"
    parser.add_argument(
        "--root", type=Path, default=default, help="the package folder (default: src/taskhead)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    args = parser.parse_args(argv)
    if not (args.root / "__init__.py").is_file():
        print(
            f"error: {args.root}: not a package folder (no __init__.py); pass --root src/taskhead",
            file=sys.stderr,
        )
        return 2
    fig = measure(args.root)
    print(json.dumps(fig, indent=1) if args.json else markdown(fig), end="" if not args.json else "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
