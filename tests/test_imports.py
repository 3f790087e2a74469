"""The package's imports run one way: no module imports itself back through others, no lower layer
(evaluation, data, nn) imports a higher one (training, cli). Every import counts, those inside functions
too: a lazy import is still a dependency."""

from __future__ import annotations

import ast
from pathlib import Path

import stn_face

PACKAGE = Path(stn_face.__file__).parent
#: layers that must not import the ones named with them
FORBIDDEN = {"stn_face.evaluation": ("stn_face.training", "stn_face.cli"),
             "stn_face.data": ("stn_face.training", "stn_face.cli", "stn_face.evaluation"),
             "stn_face.nn": ("stn_face.training", "stn_face.cli", "stn_face.evaluation", "stn_face.data"),
             "stn_face.geometry": ("stn_face.",),
             "stn_face.training": ("stn_face.cli",)}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(name: str, modules: set[str]) -> str | None:
    """The package module an imported name lives in (``a.b.c`` may be the object ``c`` of ``a.b``)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                found = [f"{base}.{alias.name}" for alias in node.names] + [base]
            else:
                continue
            for target in found:
                resolved = _resolve(target, modules)
                if resolved and resolved != name and not name.startswith(resolved + "."):
                    targets.add(resolved)
        graph[name] = targets
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return stack[stack.index(target):] + [target]
            if target not in state and (found := visit(target)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle() -> None:
    cycle = _cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_layer_imports_a_higher_one() -> None:
    wrong = sorted(f"{module} imports {target}"
                   for module, targets in import_graph().items()
                   for layer, above in FORBIDDEN.items() if module == layer or module.startswith(layer + ".")
                   for target in targets if target.startswith(above))
    assert not wrong, "imports running upward:\n" + "\n".join(wrong)


def test_the_walker_sees_lazy_and_package_imports() -> None:
    graph = import_graph()
    assert "stn_face.training.loggers" in graph and "stn_face.evaluation.artifacts" in graph["stn_face.cli.eval"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_module_imports_another_ones_private_names() -> None:
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("stn_face"):
                wrong += [f"{_module_name(path)} imports {node.module}.{alias.name}" for alias in node.names
                          if alias.name.startswith("_") and not alias.name.startswith("__")]
    assert not wrong, "private names used across modules (make them public or keep them home):\n" + "\n".join(wrong)
