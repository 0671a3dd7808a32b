"""The tree shows the design: packages by concern, imports one way, no module too long to read."""

import ast
from pathlib import Path

import pytest

from tests.helpers import ROOT

PLUMBING = {"errors", "params", "schema", "io", "cli", "tables"}
LAYERS = ["data", "ml", "portfolio", "evaluation", "live", "reporting"]  # each may import those before it
MAX_LINES = 400  # non-blank lines: what a reader reads, whatever the formatter's line breaks
MODULES = sorted((ROOT / "lib").rglob("*.py"))


def _name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def _imports(path: Path) -> set[str]:
    """Every lib module the file imports, at the top or inside a function."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("lib.")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("lib"):
            if node.module == "lib":
                out |= {f"lib.{a.name}" for a in node.names}
            else:
                out.add(node.module)
    return out


def _layer(module: str) -> int:
    """-1 for the plumbing, else the package's place in LAYERS."""
    top = module.split(".")[1]
    return -1 if top in PLUMBING else LAYERS.index(top)


def test_every_module_is_plumbing_or_in_a_package():
    for path in MODULES:
        parts = path.relative_to(ROOT / "lib").parts
        assert len(parts) == 1 and (path.stem in PLUMBING or path.stem == "__init__") or parts[0] in LAYERS, path


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_imports_flow_one_way(path):
    me = _name(path)
    if me == "lib":
        return
    for other in _imports(path):
        assert _layer(other) <= _layer(me), (
            f"{me} imports {other}: against data -> ml -> portfolio -> evaluation -> live -> reporting"
        )
        if _layer(me) == -1:
            assert _layer(other) == -1, f"plumbing {me} imports {other}"


@pytest.mark.parametrize("package", LAYERS)
def test_each_package_says_what_it_owns_and_may_import(package):
    doc = ast.get_docstring(ast.parse((ROOT / "lib" / package / "__init__.py").read_text()))
    assert doc and ("import" in doc.lower()), package


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_no_module_is_too_long_to_read(path):
    assert sum(1 for line in path.read_text().splitlines() if line.strip()) <= MAX_LINES, (
        f"{_name(path)}: split it into named parts"
    )


def test_the_rule_catches_a_wrong_way_import(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text("def f():\n    from lib.reporting import plots\n")
    assert _imports(bad) == {"lib.reporting"} and _layer("lib.reporting") > _layer("lib.data.features")
