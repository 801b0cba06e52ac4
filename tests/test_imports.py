"""Dependencies point one way: no import cycle in curate, and the model layer stands alone.

The graph is read statically with `ast`, so an import inside a function or a validator
counts as much as one at the top of a module (it closes the same cycle, only later).
Imports guarded by `if TYPE_CHECKING:` are left out: they never run.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from curate.load import check_plugins, load_recipe
from curate.model.errors import ConfigError
from curate.unit.experts.registry import EXPERTS, build_expert
from tests.conftest import ROOT

PACKAGE = ROOT / "curate"

# The recipe and record models: they import nothing else in curate, so plug-ins
# (experts, generators, adapters) can import them without closing a loop.
MODEL_LAYER = {"curate.model.recipe", "curate.model.source", "curate.model.errors"}

# Known edges that close a cycle through files this change could not touch. Each entry
# is (importer, imported) with the reason and who removes it; delete the entry when the
# edge goes. An entry that no longer exists in the code fails the test, so the list
# cannot go stale.
ALLOWED_EDGES: dict[tuple[str, str], str] = {
    # curate/kb/ is not part of this change: KnowledgeBase.query_for_sample (a method)
    # imports kb.sample, whose load_default_kb imports kb.index inside a function.
    ("curate.kb.index", "curate.kb.sample"):
        "kb.index <-> kb.sample, both lazy; kb/ is not part of this change",
    # layout_check keeps the miniature names importable from their old home (a
    # module __getattr__ that imports curate.sources.miniature), while miniature imports
    # layout_check for its helpers. Breaking it means moving callers off the old names.
    ("curate.sources.layout_check", "curate.sources.miniature"):
        "old names re-exported by layout_check.__getattr__; not part of this change",
}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST):
    """Every Import/ImportFrom node, at any depth, except under `if TYPE_CHECKING:`."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """curate module -> the curate modules it imports (anywhere in its body).

    `from curate.x import y` depends on curate.x.y when that is a module, else on
    curate.x (the package's __init__ when x is a package).
    """
    files = {module_name(p, package.parent): p for p in sorted(package.rglob("*.py"))}
    top = package.name

    def resolve(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        targets: list[str] = []
        for node in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets += [a.name for a in node.names]
                continue
            if node.level:  # relative: one level is the current package
                base = pkg.split(".")[:len(pkg.split(".")) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            for a in node.names:
                sub = f"{prefix}.{a.name}"
                targets.append(sub if sub in files else prefix)
        deps = {resolve(t) for t in targets if t.split(".")[0] == top}
        graph[mod] = {d for d in deps if d and d != mod}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One concrete cycle per tangle of mutually importing modules."""
    return [_one_cycle(graph, set(c)) for c in tangles(graph)]


def tangles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    sccs: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
            if len(comp) > 1:
                sccs.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sccs


def _one_cycle(graph: dict[str, set[str]], comp: set[str]) -> list[str]:
    """A shortest cycle through the first module of a component (breadth-first)."""
    start = min(comp)
    prev: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & comp):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(prev[path[-1]])
                    return [start, *reversed(path[:-1]), start] if v != start else [start, start]
                if w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    return sorted(comp)


def test_graph_sees_function_level_and_relative_imports(tmp_path):
    pkg = tmp_path / "curate"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from curate.sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("from ..a import f\nfrom . import c\n")
    (pkg / "sub" / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from curate import a\n")
    graph = import_graph(pkg)
    assert graph["curate.a"] == {"curate.sub.b"}
    assert graph["curate.sub.b"] == {"curate.a", "curate.sub.c"}
    assert graph["curate.sub.c"] == set()
    assert find_cycles(graph) == [["curate.a", "curate.sub.b", "curate.a"]]


def test_no_import_cycles():
    graph = import_graph()
    for (src, dst), _why in ALLOWED_EDGES.items():
        assert dst in graph.get(src, ()), f"allowlisted edge {src} -> {dst} is gone: drop it"
        graph[src] = graph[src] - {dst}
    report = [f"{' -> '.join(_one_cycle(graph, set(c)))}\n    (all {len(c)} modules in this "
              f"tangle: {', '.join(c)})" for c in tangles(graph)]
    assert not report, "import cycles in curate:\n" + "\n".join(report)


def test_model_layer_imports_nothing_else_in_curate():
    graph = import_graph()
    for mod in sorted(MODEL_LAYER):
        outside = graph[mod] - MODEL_LAYER - {d for s, d in ALLOWED_EDGES if s == mod}
        assert not outside, f"{mod} imports {sorted(outside)}; the model layer stands alone"


def test_importing_the_model_loads_no_plugin():
    code = ("import sys, curate.model.recipe; "
            "print(sorted(m for m in sys.modules if m.startswith('curate')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout
    assert eval(out) == ["curate", "curate.model", "curate.model.errors", "curate.model.recipe",
                         "curate.model.source"]


# The registry checks the model no longer does still run when a recipe is loaded.

def _recipe(tmp_path, **sections):
    path = tmp_path / "r.yaml"
    source = {"name": "s", "path": str(tmp_path), "format": "image_mask",
              "layout": {"images": ["*.png"]}}
    path.write_text(yaml.safe_dump({"name": "r", "sources": [source], **sections}))
    return path


@pytest.mark.parametrize("sections, message", [
    ({"experts": [{"name": "ct_lung"}]}, "experts.0: unknown expert 'ct_lung'; known: "),
    ({"experts": [{"name": "ct_lungs"}, {"name": "ct_lesion_candidates",
                                         "params": {"within": "liver"}}]},
     "experts.1: expert 'ct_lesion_candidates' params: within"),
    ({"experts": [{"name": "ct_lungs", "params": {"air_hu": -400, "typo": 1}}]},
     "typo: Extra inputs"),
    ({"describe": {"backend": "openai", "options": {"modle": "x"}}},
     "describe: unknown options for backend 'openai': \\['modle'\\]"),
    ({"describe": {"backend": "grounded", "options": {"model": "x"}}},
     "unknown options for backend 'grounded'"),
])
def test_unknown_plugin_names_fail_when_the_recipe_loads(tmp_path, sections, message):
    with pytest.raises(ConfigError, match=message):
        load_recipe(_recipe(tmp_path, **sections))


def test_known_plugin_names_load_and_build(tmp_path):
    recipe = load_recipe(_recipe(
        tmp_path, experts=[{"name": "ct_lesion_candidates", "params": {"within": "organs"}}],
        describe={"backend": "vllm", "options": {"model": "m", "batch_size": 4}}))
    assert isinstance(build_expert(recipe.experts[0]), EXPERTS["ct_lesion_candidates"])
    assert check_plugins(recipe) is recipe
    for path in sorted((ROOT / "recipes").glob("*.yaml")):
        load_recipe(path)
