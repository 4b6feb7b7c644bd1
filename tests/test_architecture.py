"""The architecture's promises: no import cycle (lazy imports included), one registry type,
one error root, and method objects with no special case for tightlip."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tightlip.errors import TightlipError
from tightlip.registry import Registry

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "tightlip"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Every tightlip module ``path`` imports, at top level or inside functions (lazy)."""
    found: set[str] = set()
    this = _module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != this:
                found.add(name)
    return found


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    colour: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if colour.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in colour and (found := visit(nxt)):
                return found
        colour[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in colour and (found := visit(node)):
            return found
    return None


def _graph() -> dict[str, set[str]]:
    """Import edges, without the implicit edge from a module to its parent packages.

    A package's ``__init__`` importing its own submodules is allowed (that is how
    registration happens); a submodule importing *back* from its package's ``__init__`` is a
    cycle, and so is any loop through other modules.
    """
    modules = _modules()
    return {name: _imports(path, modules) for name, path in modules.items()}


def test_cycle_finder_finds_a_planted_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles_lazy_imports_included() -> None:
    cycle = _cycle(_graph())
    assert cycle is None, " → ".join(cycle or [])


def test_persistence_does_not_depend_on_training_methods() -> None:
    graph = _graph()
    reachable, todo = set(), ["tightlip.train.checkpoint"]
    while todo:
        for nxt in graph[todo.pop()]:
            if nxt not in reachable:
                reachable.add(nxt)
                todo.append(nxt)
    assert not any(m.startswith("tightlip.methods") for m in reachable), sorted(reachable)


def test_every_registry_is_a_registry_and_names_are_hyphenated() -> None:
    from tightlip.bounds import registry as bound_registry
    from tightlip.methods import METHODS
    from tightlip.models import MODEL_KINDS
    from tightlip.settings import PRESETS
    from tightlip.train.losses import LOSSES

    registries = [METHODS, MODEL_KINDS, PRESETS, LOSSES]
    registries += [v for v in vars(bound_registry).values() if isinstance(v, Registry)]
    assert len(registries) >= 6
    for registry in registries:
        assert isinstance(registry, Registry)
        for name in registry.names():
            assert name == name.lower() and "_" not in name, (registry.kind, name)


def test_tightlip_is_a_method_like_the_others() -> None:
    from tightlip.methods import METHODS

    assert {"tightlip", "sandwich", "local-lip", "plain", "specnorm", "orthogonal"} <= set(
        METHODS.names()
    )
    for path in PACKAGE.rglob("*.py"):
        if path.parent.name == "methods" and path.stem == "tightlip":
            continue
        text = path.read_text()
        assert 'method == "tightlip"' not in text and 'method != "tightlip"' not in text, path


@pytest.mark.parametrize(
    "name",
    [
        "BadArgumentError",
        "UnknownNameError",
        "NormError",
        "DatasetError",
        "CheckpointError",
        "ModelShapeError",
        "UnsupportedLayerError",
        "MethodNotApplicableError",
    ],
)
def test_user_errors_share_one_root(name: str) -> None:
    import tightlip.errors as errors

    assert issubclass(getattr(errors, name), TightlipError)
    assert not issubclass(errors.SoundnessError, TightlipError)
