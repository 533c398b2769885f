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
