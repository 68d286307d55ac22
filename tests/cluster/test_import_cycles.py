"""No import cycles among the project's packages, read statically (nothing is imported).

What counts as an import: every `import` / `from ... import` statement of a module, wherever it
stands: at module level, inside a function, under `if TYPE_CHECKING`. An import moved into a
function to dodge a cycle still makes the two modules depend on each other, so it is a cycle in
design and counted. Importing `a.b.c` also runs the packages `a` and `a.b` (their __init__), so a
module depends on every package above what it imports: a package that re-exports from a module
which imports back into the importer is a cycle Python would meet at run time.

The graph is of modules (files), since that is the unit Python loads. Packages as a whole may
depend on each other (megatron_video.config aggregates the areas' sections, which raise its
ConfigError); `test_curator_takes_only_the_config_errors_from_the_library` pins the one way the
curator, which the library's config and command line build on, may look up at the library.
"""
from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGES = ("curator", "megatron_video", "kernels", "benchmarks")


def module_files() -> dict[str, pathlib.Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def imported_names(path: pathlib.Path, module: str) -> list[tuple[str, int]]:
    """Every dotted name this file imports (`from a import b` gives both `a.b` and `a`: `b` may be a
    submodule or a name defined in `a`), relative imports made absolute, with its line."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names += [(base, node.lineno)] + [(f"{base}.{alias.name}", node.lineno) for alias in node.names]
    return names


def import_graph() -> dict[str, dict[str, int]]:
    """module -> {module of the tree it imports: line of the first such import}."""
    modules = module_files()
    graph: dict[str, dict[str, int]] = {}
    for module, path in modules.items():
        edges = graph.setdefault(module, {})
        for name, line in imported_names(path, module):
            if name in modules:
                for target in [*_parents(name), name]:
                    if target in modules and target != module and target not in _parents(module):
                        edges.setdefault(target, line)
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root, targets_of_root in graph.items():
        if root in index:
            continue
        work = [(root, iter(targets_of_root))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, targets = work[-1]
            target = next(targets, None)
            if target is not None:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(graph[target])))
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def describe(component: list[str], graph: dict[str, dict[str, int]], modules: dict[str, pathlib.Path]) -> str:
    edges = [f"  {modules[a].relative_to(ROOT)}:{line} imports {b}"
             for a in component for b, line in sorted(graph[a].items()) if b in component]
    return "cycle of " + ", ".join(component) + ":\n" + "\n".join(edges)


def test_the_cycle_finder_names_a_cycle_and_its_imports():
    graph = {"a": {"b": 3}, "b": {"c": 5}, "c": {"a": 7, "d": 1}, "d": {}, "e": {"e2": 1}, "e2": {}}
    assert cycles(graph) == [["a", "b", "c"]]
    files = {name: ROOT / f"{name}.py" for name in graph}
    assert "a.py:3 imports b" in describe(["a", "b", "c"], graph, files)


def test_imports_are_read_from_functions_and_relative_forms_and_reach_parent_packages(tmp_path):
    path = tmp_path / "mod.py"
    path.write_text("def f():\n    from . import sibling\n    from ..other import thing\n")
    names = {name for name, _ in imported_names(path, "curator.stages.mod")}
    assert {"curator.stages.sibling", "curator.other", "curator.other.thing"} <= names
    graph = import_graph()
    # `from curator.config import CurateConfig` in the schema: the module and the package above it.
    assert {"curator.config", "curator"} <= set(graph["megatron_video.config.schema"])


def test_the_packages_have_no_import_cycle():
    graph = import_graph()
    modules = module_files()
    assert len(graph) > 100, "the walk found too few modules to be the project"
    found = cycles(graph)
    assert not found, "\n".join(describe(component, graph, modules) for component in found)


# The passes over a finished curated output (captions, balancing, dedup, and the filter verdicts judged
# from the stored scores at the end of every run) read clips and write feature sets through the
# library's catalog, the one way feature sets are written and read.
POST_CURATION = ("curator.balance.", "curator.captions.", "curator.dedup.", "curator.shard_clips",
                 "curator.filters.verdict")
CATALOG = ("megatron_video.data", "megatron_video.data.catalog", "megatron_video.data.decode")


def test_curator_takes_only_the_config_errors_from_the_library():
    """The library's config nests the curator's section and its command line runs the curator, so
    the curator sits below the library: it may raise the library's ConfigError (from its own module,
    which imports nothing), tie its helper processes' lives to their client's with the library's
    `lifetime` and count the cores it may run on with `cpu_cores` (both standard library only), and
    use nothing else of it, except the post-curation passes, which use the catalog."""
    graph = import_graph()
    allowed = ("megatron_video", "megatron_video.config", "megatron_video.config.errors", "megatron_video.lifetime",
               "megatron_video.cpu_cores")
    upward = {f"{module} imports {target}" for module, targets in graph.items() if module.startswith("curator")
              for target in targets if target.startswith("megatron_video") and target not in allowed
              and not (module.startswith(POST_CURATION) and target in CATALOG)}
    assert not upward, sorted(upward)
    assert not graph["megatron_video.config.errors"], "the config errors module must stay at the bottom"
    assert not graph["megatron_video.lifetime"], "the lifetime module must stay at the bottom"
    assert not graph["megatron_video.cpu_cores"], "the cpu_cores module must stay at the bottom"


def test_no_stage_imports_an_executor():
    """Stages learn about their worker from the WorkerContext their executor passes to `setup`."""
    graph = import_graph()
    found = {f"{module} imports {target}" for module, targets in graph.items() if module.startswith("curator.stages.")
             for target in targets if target.startswith("curator.executors")}
    assert not found, sorted(found)
