"""The package's layout, read from its source: imports run one way and never in a circle.

Layers, lowest first (DESIGN.md): core < {datasets, models} < analysis < methods < training <
studies < cli. A module may import from its own package (``methods.rise`` from
``methods.hdm``) and from lower layers; ``datasets`` and ``models`` are peers and do not import
each other. The public face (``interpret_segmentation/__init__.py``, ``hdm.py``, ``rise.py``)
sits at the methods layer.

Imports are read with ``ast``, relative ones resolved, and imports inside functions
("lazy") count as much as those at module level for the layer rule: a lazy import is a
dependency all the same.

Cycles. The graph of imports that run when a module is imported (module level, including class
bodies and ``try`` blocks; not ``if TYPE_CHECKING:``) must be acyclic: a cycle there makes the
import order matter and breaks as soon as a name is used at import time. A cycle that needs a
lazy import is refused too, unless every edge of it is lazy: two modules that each import the
other only inside functions load in any order, but one that imports the other at module level
while the other reaches back lazily is the usual way of hiding a mutual dependency, and the
shared part belongs in a lower module. A submodule's implicit import of its own parent
packages (``core.model`` runs ``core/__init__``) is not an edge: Python initialises the parent
first whatever the submodule imports.
"""

from __future__ import annotations

import ast
import os
import pkgutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import interpret_segmentation

PACKAGE = "interpret_segmentation"
ROOT = Path(interpret_segmentation.__file__).parent

LAYERS = {"core": 0, "datasets": 1, "models": 1, "analysis": 2, "methods": 3, "training": 4,
          "studies": 5, "cli": 6}
PUBLIC_FACE = {PACKAGE, f"{PACKAGE}.hdm", f"{PACKAGE}.rise"}  # at the methods layer


# -- reading the source ---------------------------------------------------------------------------


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join((PACKAGE, *parts))] = path
    return found


MODULES = _modules()


@dataclass(frozen=True)
class Import:
    source: str
    target: str
    line: int
    lazy: bool  # inside a function: runs when called, not when imported
    typing_only: bool  # under ``if TYPE_CHECKING:``: never runs


def _is_package(module: str) -> bool:
    return MODULES.get(module, Path()).name == "__init__.py"


def _ancestors(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:k]) for k in range(1, len(parts))]


def _targets(source: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The package modules ``node`` runs, besides ``source`` and its parent packages (which
    are initialised before it whatever it imports)."""
    own = {*_ancestors(source), source}
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
        targets = [name for full in names for name in [*_ancestors(full), full]]
        return [t for t in targets if t in MODULES and t not in own]
    if node.level:
        base = source if _is_package(source) else source.rpartition(".")[0]
        for _ in range(node.level - 1):
            base = base.rpartition(".")[0]
        base = f"{base}.{node.module}" if node.module else base
    else:
        base = node.module or ""
    if base not in MODULES:
        return []
    submodules = [f"{base}.{alias.name}" for alias in node.names
                  if f"{base}.{alias.name}" in MODULES]
    attributes = len(submodules) < len(node.names)  # a name defined in base's own code
    targets = [a for a in _ancestors(base) if a not in own]
    if base not in own or attributes:  # names from a parent's own code depend on it too
        targets.append(base)
    return [t for t in [*targets, *submodules] if t in MODULES]


class _Reader(ast.NodeVisitor):
    """Imports of one module: of the package's modules (``imports``) and of others
    (``external``: (name, line, whether it does not run on import: lazy or typing only))."""

    def __init__(self, source: str):
        self.source, self.imports, self.external, self.functions, self.typing = (
            source, [], [], 0, 0)

    def _add(self, node):
        lazy = self.functions > 0
        for target in _targets(self.source, node):
            self.imports.append(Import(self.source, target, node.lineno, lazy, self.typing > 0))
        names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                 else [] if node.level else [node.module or ""])
        self.external += [(name, node.lineno, lazy or self.typing > 0) for name in names
                          if name.split(".")[0] != PACKAGE]

    visit_Import = visit_ImportFrom = _add

    def _function(self, node):
        self.functions += 1
        self.generic_visit(node)
        self.functions -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_If(self, node):
        test = node.test
        typing = (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
            isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
        self.typing += typing
        for child in node.body:
            self.visit(child)
        self.typing -= typing
        for child in node.orelse:
            self.visit(child)


def _read() -> dict[str, _Reader]:
    readers = {}
    for module, path in MODULES.items():
        readers[module] = _Reader(module)
        readers[module].visit(ast.parse(path.read_text(), filename=str(path)))
    return readers


READERS = _read()
IMPORTS = [item for reader in READERS.values() for item in reader.imports]


# -- the rules ------------------------------------------------------------------------------------


def layer(module: str) -> tuple[str, int]:
    """``(package, rank)`` of a module: its top-level sub-package and that package's layer."""
    if module in PUBLIC_FACE:
        return "public", LAYERS["methods"]
    package = module.split(".")[1]
    return package, LAYERS[package]


def layer_violations(imports) -> list[str]:
    """``source:line imports target`` for each import from the same layer's other package or
    from a higher layer."""
    found = []
    for item in imports:
        (own, rank), (other, other_rank) = layer(item.source), layer(item.target)
        if own == other or other_rank < rank or (own == "public" and other_rank == rank):
            continue
        kind = "lazily " if item.lazy else ""
        found.append(f"{item.source}:{item.line} {kind}imports {item.target} "
                     f"({other}, above or beside {own})")
    return sorted(set(found))


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (or a module importing
    itself), each sorted: every cycle of the graph lies inside one of them."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):  # Tarjan, iterative over the successors to stay shallow
        work = [(node, iter(sorted(edges.get(node, ()))))]
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        while work:
            current, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(edges.get(successor, ())))))
                    break
                if successor in on_stack:
                    low[current] = min(low[current], index[successor])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[current])
                if low[current] == index[current]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == current:
                            break
                    if len(component) > 1 or current in edges.get(current, ()):
                        found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(found)


def _graph(imports) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for item in imports:
        edges.setdefault(item.source, set()).add(item.target)
    return edges


def cycle_violations(imports) -> list[str]:
    """Cycles among module-level imports, and cycles that need a lazy import but are not
    lazy throughout (see the module docstring)."""
    running = [item for item in imports if not item.typing_only]
    eager = [item for item in running if not item.lazy]
    eager_cycles = cycles(_graph(eager))
    found = [f"import-time cycle: {' <-> '.join(c)}" for c in eager_cycles]
    for component in cycles(_graph(running)):
        # every edge inside a strongly connected component lies on a cycle of it: one with a
        # module-level edge is a cycle that is not lazy throughout
        members = set(component)
        if component not in eager_cycles and any(i.source in members and i.target in members
                                                 for i in eager):
            found.append(f"cycle through a lazy import: {' <-> '.join(component)}")
    return sorted(found)


# -- the rules checked on hand-made graphs --------------------------------------------------------


def _edge(source, target, lazy=False):
    return Import(f"{PACKAGE}.{source}", f"{PACKAGE}.{target}", 1, lazy, False)


def test_the_layer_rule_on_hand_made_imports():
    allowed = [_edge("methods.hdm", "core.model"), _edge("methods.hdm", "methods.rise"),
               _edge("analysis.metrics", "core"), _edge("cli.explain", "studies.demo", lazy=True),
               _edge("hdm", "methods.hdm"), _edge("rise", "hdm"), _edge("methods.hdm", "models.unet")]
    assert layer_violations(allowed) == []
    refused = [_edge("core.model", "analysis.metrics", lazy=True), _edge("datasets.files", "models.unet"),
               _edge("analysis.features", "methods.deepdream"), _edge("training", "cli"),
               _edge("methods.hdm", "hdm")]
    assert [v.split(" ")[0] for v in layer_violations(refused)] == [
        f"{PACKAGE}.analysis.features:1", f"{PACKAGE}.core.model:1", f"{PACKAGE}.datasets.files:1",
        f"{PACKAGE}.methods.hdm:1", f"{PACKAGE}.training:1"]


def test_the_cycle_rule_on_hand_made_imports():
    chain = [_edge("core.a", "core.b"), _edge("core.b", "core.c")]
    assert cycle_violations(chain) == []
    assert cycle_violations([*chain, _edge("core.c", "core.a")]) == [
        f"import-time cycle: {PACKAGE}.core.a <-> {PACKAGE}.core.b <-> {PACKAGE}.core.c"]
    assert cycle_violations([*chain, _edge("core.c", "core.a", lazy=True)]) == [
        f"cycle through a lazy import: {PACKAGE}.core.a <-> {PACKAGE}.core.b <-> {PACKAGE}.core.c"]
    lazy_both_ways = [_edge("core.a", "core.b", lazy=True), _edge("core.b", "core.a", lazy=True)]
    assert cycle_violations(lazy_both_ways) == []


def test_imports_are_resolved_relative_to_their_module():
    def targets(source, code):
        return _targets(source, ast.parse(code).body[0])

    assert targets(f"{PACKAGE}.methods.hdm", "from ..core import Target") == [f"{PACKAGE}.core"]
    assert targets(f"{PACKAGE}.methods.hdm", "from ..analysis.metrics import dice") == [
        f"{PACKAGE}.analysis", f"{PACKAGE}.analysis.metrics"]
    assert targets(PACKAGE, "from . import hdm, methods") == [f"{PACKAGE}.hdm", f"{PACKAGE}.methods"]
    assert targets(f"{PACKAGE}.core.model", "from .validate import check_int") == [
        f"{PACKAGE}.core.validate"]  # core itself is already being imported
    assert targets(f"{PACKAGE}.core", "from .validate import check_int") == [f"{PACKAGE}.core.validate"]
    assert targets(f"{PACKAGE}.studies.demo", f"import {PACKAGE}.methods.hdm") == [
        f"{PACKAGE}.methods", f"{PACKAGE}.methods.hdm"]
    assert targets(f"{PACKAGE}.core.model", "import numpy as np") == []
    reader = _Reader(f"{PACKAGE}.core.model")
    reader.visit(ast.parse("if TYPE_CHECKING:\n    from ..methods import hdm\n"
                           "def f():\n    from ..analysis import metrics\n"))
    assert [(i.target.split(".")[-1], i.lazy, i.typing_only) for i in reader.imports] == [
        ("methods", False, True), ("hdm", False, True), ("analysis", True, False),
        ("metrics", True, False)]


# -- the rules on the package ---------------------------------------------------------------------


def test_every_module_belongs_to_a_layer():
    assert sorted(m for m in MODULES if m not in PUBLIC_FACE
                  and m.split(".")[1] not in LAYERS) == []


def test_imports_run_one_way_through_the_layers():
    violations = layer_violations(IMPORTS)
    assert violations == [], "imports against the layers:\n" + "\n".join(violations)


def test_no_import_cycles():
    violations = cycle_violations(IMPORTS)
    assert violations == [], "\n".join(violations)


# -- importing has no side effects ----------------------------------------------------------------


def _run(code: str) -> str:
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    environment.pop("MPLBACKEND", None)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=environment, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def _top_level_importers(prefixes: tuple[str, ...]) -> list[str]:
    """``module:line`` of the package's module-level imports of ``prefixes`` (e.g.
    "matplotlib"): the culprits to name when a test below fails."""
    return sorted(f"{module}:{line}" for module, reader in READERS.items()
                  for name, line, lazy in reader.external
                  if not lazy and any(name == p or name.startswith(p + ".") for p in prefixes))


def test_importing_every_module_has_no_global_side_effects():
    """No backend selected, no pyplot, and the global random generators neither reseeded nor
    advanced."""
    output = _run(f"""
import importlib, pkgutil, random, sys
import matplotlib, numpy, torch
torch.manual_seed(7), numpy.random.seed(7), random.seed(7)
def states():
    return (torch.get_rng_state().tolist(), repr(numpy.random.get_state()), random.getstate())
backend, generators = dict.__getitem__(matplotlib.rcParams, "backend"), states()  # unresolved
import {PACKAGE}
for module in pkgutil.walk_packages({PACKAGE}.__path__, "{PACKAGE}."):
    if not module.name.endswith(".__main__"):  # that one runs the command line
        importlib.import_module(module.name)
print(backend == dict.__getitem__(matplotlib.rcParams, "backend"),
      "matplotlib.pyplot" in sys.modules, generators == states())
""")
    assert output.split() == ["True", "False", "True"], _top_level_importers(
        ("matplotlib.pyplot",))


def test_figures_keep_a_backend_the_user_chose():
    output = _run(f"""
import sys
import matplotlib
matplotlib.use("svg")
import numpy as np
from {PACKAGE}.analysis.figures import explanation_figure, figure_png, scatter_figure
png = figure_png(explanation_figure(np.zeros((6, 6)), {{"map": np.eye(6)}}, prediction=np.eye(6)))
png += figure_png(scatter_figure([1, 2], [3, 4], xlabel="x", ylabel="y", title="t"))
print(matplotlib.get_backend(), "matplotlib.pyplot" in sys.modules, png.startswith(b"\\x89PNG"))
""")
    assert output.split() == ["svg", "False", "True"]


def test_importing_the_package_imports_neither_matplotlib_nor_pillow():
    output = _run(f"""
import sys
import {PACKAGE}
print(*sorted(m for m in ("matplotlib", "PIL") if m in sys.modules))
""")
    assert output.split() == [], (
        f"importing {PACKAGE} imported {output.split()}; modules importing them at module "
        f"level: {_top_level_importers(('matplotlib', 'PIL'))}")


def test_walking_the_package_finds_every_module():
    walked = {m.name for m in pkgutil.walk_packages(interpret_segmentation.__path__, f"{PACKAGE}.")}
    assert walked | {PACKAGE} == set(MODULES)


if __name__ == "__main__":  # pragma: no cover - a report for people
    print("\n".join(layer_violations(IMPORTS) + cycle_violations(IMPORTS)) or "no violations")
    sys.exit(pytest.main([__file__, "-q"]))


# -- the public face ------------------------------------------------------------------------------


def test_the_package_exports_every_registered_explainer_and_the_core_names():
    from interpret_segmentation import methods

    exported = {name: getattr(interpret_segmentation, name) for name in interpret_segmentation.__all__}
    for name in ("HDM", "RISE", "SegGradCAM", "MiSuRe", "Target", "Explanation", "ModelAdapter",
                 "methods", "explain", "HausdorffDistanceMasks", "SegmentationRISE"):
        assert name in exported, name
    assert exported["methods"] is methods
    missing = [name for name in methods.available()
               if methods.get(name).cls not in exported.values()]
    assert missing == [], f"registered methods whose explainer the package does not export: {missing}"


def test_explain_in_one_call_is_building_the_explainer_and_explaining():
    from oracles import PatchModel, patch_image

    from interpret_segmentation import HDM, RISE, Target, explain

    model, image = PatchModel(), patch_image()
    direct = RISE(model, n_masks=12, s=4, seed=3, progress=False).explain(image, 1)
    one_call = explain(model, image, "rise", target=1, n_masks=12, s=4, seed=3, progress=False)
    assert one_call.method == direct.method == "rise"
    assert np.array_equal(one_call.saliency, direct.saliency)
    assert one_call.parameters == direct.parameters
    region = np.zeros((48, 48), bool)
    region[5:15, 5:15] = True
    direct = HDM(model, circle_size=8, offset=8, progress=False).explain(image, Target(1, region))
    one_call = explain(model, image, target=Target(1, region), circle_size=8, offset=8,
                       progress=False)  # HDM by default
    assert one_call.method == "hdm" and np.array_equal(one_call.saliency, direct.saliency)


def test_explain_refuses_unknown_methods_and_options():
    from oracles import PatchModel, patch_image

    from interpret_segmentation import explain, methods

    with pytest.raises(ValueError, match=r"^method: expected one of .*got 'lime'$") as error:
        explain(PatchModel(), patch_image(), method="lime")
    assert all(name in str(error.value) for name in methods.available())
    with pytest.raises(TypeError, match="circle_sise"):
        explain(PatchModel(), patch_image(), circle_sise=8)
