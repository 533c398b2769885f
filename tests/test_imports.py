"""The design's import directions, read from the source (every import, function-level ones too).

``arch/`` imports nothing from ``construct/`` (templates and searches act on specs from above);
the trainer (``train/``) imports nothing from ``arch/``, ``construct/``, ``floating/`` or the model
registry, directly or through another module.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fnnjax"


def _imports(path: Path) -> set[str]:
    """Absolute names of the fnnjax modules that ``path`` imports."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {n for n in names if n.split(".")[0] == "fnnjax"}


def _violations(subpackage: str, forbidden: tuple[str, ...]) -> list[str]:
    out = []
    for path in sorted((PACKAGE / subpackage).rglob("*.py")):
        for name in sorted(_imports(path)):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                out.append(f"{path.relative_to(PACKAGE.parent)} imports {name}")
    return out


@pytest.mark.parametrize(
    ("subpackage", "forbidden"),
    [
        ("arch", ("fnnjax.construct", "fnnjax.models", "fnnjax.train", "fnnjax.cli")),
        ("train", ("fnnjax.arch", "fnnjax.construct", "fnnjax.floating", "fnnjax.models",
                   "fnnjax.cli")),
        ("floating", ("fnnjax.arch", "fnnjax.construct", "fnnjax.models", "fnnjax.train",
                      "fnnjax.cli")),
    ],
)  # fmt: skip
def test_subpackages_import_only_downwards(subpackage, forbidden):
    assert _violations(subpackage, forbidden) == []


def test_the_reader_sees_function_level_imports():
    # The check would be void if it missed the lazy imports that the code base uses.
    assert "fnnjax.floating.layer" in _imports(PACKAGE / "arch" / "build.py")


def _module_file(name: str) -> Path | None:
    rel = Path(*name.split(".")[1:])
    for candidate in (PACKAGE / rel / "__init__.py", PACKAGE / rel.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None  # an attribute (``from fnnjax.x import name``), not a module


def test_the_trainer_reaches_no_model_code_through_other_modules():
    # The closure of what fnnjax.train's modules import (the root package's re-exports aside).
    seen, todo = set(), [p for p in (PACKAGE / "train").rglob("*.py")]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo.extend(f for n in _imports(path) if (f := _module_file(n)) and f != PACKAGE / "__init__.py")
    reached = sorted(str(p.relative_to(PACKAGE)) for p in seen)
    assert [r for r in reached if r.split("/")[0] in ("arch", "construct", "floating", "models.py")] == []
    assert "train/loop.py" in reached and "errors.py" in reached


def _runtime_imports(path: Path) -> list[tuple[str, str]]:
    """``(module, name)`` of every ``from fnnjax... import name`` in ``path`` that runs (those
    under ``if TYPE_CHECKING:`` only name types), function-level ones included."""
    tree = ast.parse(path.read_text(), str(path))
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING"
                   for n in ast.walk(node)}  # fmt: skip
    out = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out += [(node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            out += [(alias.name, "") for alias in node.names]
    return [(m, n) for m, n in out if m.split(".")[0] == "fnnjax"]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_two_modules_import_each_other_except_spec_and_shapes():
    """No import circle between modules (packages' ``__init__`` re-exports aside), through any
    chain: ``arch/spec`` <-> ``arch/shapes`` is the one allowed (validation infers shapes)."""
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        if path.name == "__init__.py":
            continue
        deps = set()
        for module, imported in _runtime_imports(path):
            full = f"{module}.{imported}"
            dep = full if full in files else module
            if dep != name and dep in files and files[dep].name != "__init__.py":
                deps.add(dep)
        graph[name] = deps

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            node = todo.pop()
            if node == goal:
                return True
            if node not in seen:
                seen.add(node)
                todo.extend(graph.get(node, ()))
        return False

    circles = sorted({tuple(sorted((a, b))) for a in graph for b in graph[a] if reaches(b, a)})
    assert circles == [("fnnjax.arch.shapes", "fnnjax.arch.spec")], circles


def test_no_construct_module_imports_a_private_name_of_train_or_arch():
    found = [f"{path.relative_to(PACKAGE.parent)}: {module}.{name}"
             for path in sorted((PACKAGE / "construct").rglob("*.py"))
             for module, name in _runtime_imports(path)
             if module.split(".")[1:2] in (["train"], ["arch"]) and name.startswith("_")]  # fmt: skip
    assert found == []


def test_the_circle_check_sees_a_circle_and_skips_type_only_imports():
    # The checks would be void if they missed what they look for.
    probe = _runtime_imports(PACKAGE / "construct" / "capacity" / "probe.py")
    assert ("fnnjax.construct.capacity.driver", "DynamicConfig") not in probe  # TYPE_CHECKING
    assert ("fnnjax.arch.shapes", "infer_layers") in _runtime_imports(PACKAGE / "arch" / "spec.py")


def test_no_module_is_over_600_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 600}  # fmt: skip
    assert long == {}
