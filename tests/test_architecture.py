"""The package's import structure (ARCHITECTURE.md): no import circle, no import from a lower layer to a higher one.

Every ``import``/``from ... import`` of a ``valuemech`` module counts, at module level or inside a
function (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "valuemech"

#: Layers from the bottom up, as in ARCHITECTURE.md; a name is a module or a package (every module in it).
LAYERS: list[tuple[str, ...]] = [
    ("errors", "values"),
    ("io", "config", "openai_client", "plots", "hardware"),
    ("data", "models"),
    ("batching", "hooks", "nltk_data"),
    ("artifacts", "scoring", "generate"),
    ("vectors", "judges", "labels", "vectorfile"),
    ("decompose", "label_null"),
    ("neurons",),
    ("rundir",),
    ("steering",),
    ("evals", "export", "monitor"),
    ("serve", "report"),
    ("pipeline",),
    ("cli",),
]


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(["valuemech", *parts])


def imports_of(path: Path, name: str) -> set[str]:
    """The valuemech modules ``path`` imports (``from valuemech.x import y`` counts y when y is a module)."""
    modules = known_modules()
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("valuemech")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                pkg = name.split(".")[: -node.level] if not path.name == "__init__.py" else name.split(".")
                base = ".".join(pkg + ([base] if base else []))
            if not base.startswith("valuemech"):
                continue
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.add(sub if sub in modules else base)
    out.discard(name)
    return {m for m in out if m in modules}


def known_modules() -> set[str]:
    return {module_name(p) for p in SRC.rglob("*.py")}


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p, module_name(p)) for p in SRC.rglob("*.py")
            if module_name(p) != "valuemech"}  # the package facade imports lazily by name


def layer_of(module: str) -> int:
    top = module.split(".")[1]
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"{module} is in no layer of LAYERS (add it to the table and to ARCHITECTURE.md)")


def test_every_module_has_a_layer():
    for m in graph():
        layer_of(m)


def test_no_import_from_a_lower_layer_to_a_higher_one():
    upward = [(a, b) for a, deps in graph().items() for b in deps
              if b != "valuemech" and layer_of(b) > layer_of(a)]
    assert not upward, "imports that run up the layers: " + ", ".join(f"{a} -> {b}" for a, b in upward)


def test_no_import_circle():
    g = graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(g.get(m, ())):
            if state.get(d) == 1:
                cycle = stack[stack.index(d):] + [d]
                raise AssertionError("import circle: " + " -> ".join(cycle))
            if d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m)


def test_the_checker_sees_a_circle_and_an_upward_import(tmp_path, monkeypatch):
    """The two checks above can fail: a fake package with a circle and an upward import."""
    pkg = tmp_path / "valuemech"
    (pkg / "evals").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "evals" / "__init__.py").write_text("")
    (pkg / "config.py").write_text("from valuemech.evals import registry\n")  # config is a leaf: upward
    (pkg / "evals" / "registry.py").write_text("from valuemech import config\n")  # and back: a circle
    monkeypatch.setattr(__import__(__name__), "SRC", pkg)
    import pytest

    with pytest.raises(AssertionError, match="run up the layers: valuemech.config -> valuemech.evals.registry"):
        test_no_import_from_a_lower_layer_to_a_higher_one()
    with pytest.raises(AssertionError, match="import circle"):
        test_no_import_circle()
