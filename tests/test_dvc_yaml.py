"""dvc.yaml against the code: every stage's deps are exactly the code it imports, its params the
keys it reads (never a run-only key), its metrics open with the verdict, its plots name real columns.

Static checks (ast and YAML only): nothing here runs a stage or DVC."""

from __future__ import annotations

import ast
import json
import shlex
from pathlib import Path

import pytest
import yaml

from lib import tables
from lib.evaluation.verdict import VERDICT_KEYS, verdict_metrics
from lib.schema import RUN_ONLY, SCHEMA
from tests.helpers import ROOT

FIRST_PARTY = ("lib", "stages")  # the packages whose files a stage's deps must list
NOT_STAGES = {
    "stages/__init__.py",
    "stages/trials.py",
    "stages/track.py",
    "stages/refresh.py",
    "stages/calibrate.py",
}  # trials is a command (README: Layout)
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))
STAGES: dict[str, dict] = DVC["stages"]


# ------------------------------------------------------------------------------ import closure
def module_files(module: str, root: Path = ROOT) -> list[Path]:
    """The files that importing `module` executes: each package's `__init__.py` on the way, then
    the module's own file (`a/b.py`) or package (`a/b/__init__.py`). Raises if nothing is there."""
    parts = module.split(".")
    files = []
    for i in range(1, len(parts) + 1):
        base = root.joinpath(*parts[:i])
        if (base / "__init__.py").is_file():
            files.append(base / "__init__.py")
        elif i == len(parts) and base.with_suffix(".py").is_file():
            files.append(base.with_suffix(".py"))
        elif not base.is_dir():  # a namespace package (a folder without __init__.py) is fine
            raise ModuleNotFoundError(f"{module}: no {base.relative_to(root)}.py or folder")
    return files


def _package(path: Path, root: Path) -> list[str]:
    """The dotted package a file belongs to (for relative imports)."""
    return list(path.relative_to(root).parent.parts)


def imported_modules(path: Path, root: Path = ROOT) -> set[str]:
    """First-party modules that `path` imports anywhere (module level, functions, branches), absolute
    or relative; `from a.b import c` gives `a.b` and, when it is a module or package, `a.b.c`."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found = [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _package(path, root)
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            found = [(module, [a.name for a in node.names if a.name != "*"])]
        else:
            continue
        for module, names in found:
            if module.split(".")[0] not in FIRST_PARTY:
                continue
            out.add(module)
            for name in names:  # a submodule (`from lib import plots`) or just a name (`from lib.x import f`)
                sub = root.joinpath(*module.split("."), name)
                if sub.with_suffix(".py").is_file() or sub.is_dir():
                    out.add(f"{module}.{name}")
    return out


def import_closure(module: str, root: Path = ROOT) -> set[str]:
    """Repo-relative paths of every first-party file that `python -m module` executes."""
    seen: set[str] = set()
    todo = module_files(module, root)
    while todo:
        path = todo.pop()
        rel = path.relative_to(root).as_posix()
        if rel in seen:
            continue
        seen.add(rel)
        for imported in imported_modules(path, root):
            todo += module_files(imported, root)
    return seen


def stage_module(name: str) -> str:
    argv = shlex.split(STAGES[name]["cmd"])
    assert argv[:2] == ["python", "-m"], f"stage '{name}': cmd must be `python -m stages.{name} ...`"
    return argv[2]


def covers(dep: str, path: str) -> bool:
    """A dep covers itself and, when it is a folder, every file under it."""
    dep = dep.rstrip("/")
    return path == dep or path.startswith(dep + "/")


def code_deps(name: str) -> list[str]:
    return [d for d in STAGES[name].get("deps", []) if d.split("/")[0] in FIRST_PARTY]


def test_closure_follows_flat_modules_packages_and_imports_inside_functions(tmp_path):
    files = {
        "lib/__init__.py": "",
        "lib/flat.py": "from lib.pkg import helper\n",
        "lib/pkg/__init__.py": "from .mod import helper  # noqa\n",
        "lib/pkg/mod.py": "def helper():\n    from lib import late\n    return late\n",
        "lib/pkg/unused.py": "",
        "lib/late.py": "import lib.deep.leaf\n",
        "lib/deep/leaf.py": "",  # a namespace package: no __init__.py
        "lib/other.py": "",
        "stages/__init__.py": "",
        "stages/s.py": "import json\nfrom lib.flat import x\n\ndef main():\n    import lib.other as o\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    assert import_closure("stages.s", tmp_path) == set(files) - {"lib/pkg/unused.py"}
    with pytest.raises(ModuleNotFoundError, match="lib.missing"):
        module_files("lib.missing", tmp_path)


def test_every_stage_is_a_stage_script_and_bench_and_trials_are_not_stages():
    scripts = {p.relative_to(ROOT).as_posix() for p in (ROOT / "stages").glob("*.py")} - NOT_STAGES
    assert {f"stages/{name}.py" for name in STAGES} == scripts
    for name, stage in STAGES.items():
        assert stage_module(name) == f"stages.{name}", name
        assert not any(str(d).startswith("bench") for d in stage.get("deps", [])), name
        assert "bench" not in stage["cmd"] and "stages.trials" not in stage["cmd"], name
        assert "stages.calibrate" not in stage["cmd"], name


@pytest.mark.parametrize("name", list(STAGES))
def test_deps_cover_every_file_the_stage_imports(name):
    deps = STAGES[name].get("deps", [])
    missing = sorted(f for f in import_closure(stage_module(name)) if not any(covers(d, f) for d in deps))
    assert not missing, f"stage '{name}': dvc.yaml deps miss {missing}, which it imports"


@pytest.mark.parametrize("name", list(STAGES))
def test_deps_list_no_code_the_stage_does_not_import(name):
    closure = import_closure(stage_module(name))
    for dep in code_deps(name):
        path = ROOT / dep
        assert path.exists(), f"stage '{name}': dep {dep} does not exist"
        files = [p.relative_to(ROOT).as_posix() for p in path.rglob("*.py")] if path.is_dir() else [dep]
        unused = sorted(set(files) - closure)
        assert not unused, f"stage '{name}': dvc.yaml dep {dep} covers {unused}, which the stage never imports"


# ------------------------------------------------------------------------------------- params
def listed_params(name: str) -> list[str]:
    out = []
    for entry in STAGES[name].get("params", []):
        if isinstance(entry, dict):  # {file: [keys]}
            for file, keys in entry.items():
                assert file == "params.yaml", f"stage '{name}': params from {file}"
                out += keys
        else:
            out.append(entry)
    return out


def covered(name: str) -> set[tuple[str, str]]:
    """(section, key) of every key that the stage's params entries name (a section: all its keys)."""
    keys = set()
    for entry in listed_params(name):
        section, _, key = entry.partition(".")
        keys |= {(section, k) for k in SCHEMA[section]} if not key else {(section, key)}
    return keys


def _str_slice(node: ast.AST) -> str | None:
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
        return node.slice.value
    return None


def script_reads(path: Path) -> tuple[set[tuple[str, str]], set[str]]:
    """What a stage script reads of `load_params()` by name: (section, key) pairs, and the sections
    it uses whole (passes on, iterates). Names bound to `load_params()` or called `params` are the
    root; a name bound to `root["section"]` is that section. Whatever the root itself is passed to
    (a checkpoint, a run cache) is not seen here."""
    tree = ast.parse(path.read_text(encoding="utf-8"))

    def is_load(node: ast.AST) -> bool:
        return isinstance(node, ast.Call) and getattr(node.func, "id", None) == "load_params"

    def pairs() -> list[tuple[ast.AST, ast.AST]]:
        out = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign):
                for t in node.targets:
                    if isinstance(t, ast.Tuple) and isinstance(node.value, ast.Tuple):
                        out += list(zip(t.elts, node.value.elts, strict=True))
                    else:
                        out.append((t, node.value))
        return out

    roots = {"params"} | {t.id for t, v in pairs() if isinstance(t, ast.Name) and is_load(v)}

    def section_of(node: ast.AST) -> str | None:
        v = getattr(node, "value", None)
        if _str_slice(node) and ((isinstance(v, ast.Name) and v.id in roots) or is_load(v)):
            return _str_slice(node)
        return None

    bound = {t.id: section_of(v) for t, v in pairs() if isinstance(t, ast.Name) and section_of(v)}
    keys, whole, keyed = set(), set(), set()
    for node in ast.walk(tree):
        key, v = _str_slice(node), getattr(node, "value", None)
        if key and isinstance(v, ast.Name) and v.id in bound:
            keys.add((bound[v.id], key))
            keyed.add(id(v))
        elif key and section_of(v):
            keys.add((section_of(v), key))
            keyed.add(id(v))
    binding = {id(v) for t, v in pairs() if isinstance(t, ast.Name) and section_of(v)}
    for node in ast.walk(tree):
        if id(node) in keyed or id(node) in binding:
            continue
        if section_of(node):
            whole.add(section_of(node))
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id in bound:
            whole.add(bound[node.id])
    return keys, whole


def _run_only() -> set[tuple[str, str]]:
    return {(s, k) for s, ks in RUN_ONLY.items() for k in ks}


@pytest.mark.parametrize("name", list(STAGES))
def test_params_name_schema_keys_once(name):
    entries = listed_params(name)
    assert len(entries) == len(set(entries)), f"stage '{name}': a params entry is listed twice"
    for entry in entries:
        section, _, key = entry.partition(".")
        assert section in SCHEMA and (not key or key in SCHEMA[section]), f"stage '{name}': unknown param {entry}"
        assert not key or section not in entries, f"stage '{name}': {entry} is already covered by {section}"


def test_no_stage_lists_a_run_only_key():
    """A run-only key (lib/params.py RUN_ONLY) changes no bit: listing it would rerun the stage for nothing."""
    for name in STAGES:
        listed = sorted(f"{s}.{k}" for s, k in covered(name) & _run_only())
        assert not listed, (
            f"stage '{name}' lists run-only {listed}: list its section per key instead "
            f"(`- section.key` for each other key)"
        )


def test_every_result_key_is_read_by_some_stage():
    """Every key of the schema but the run-only ones reruns the stages that read it."""
    every = {(s, k) for s, specs in SCHEMA.items() for k in specs} - _run_only()
    union = set().union(*(covered(name) for name in STAGES))
    assert not sorted(f"{s}.{k}" for s, k in every - union), "keys no stage lists"


@pytest.mark.parametrize("name", list(STAGES))
def test_stage_lists_the_params_its_script_reads(name):
    """The keys a stage script names are listed, and a section it passes on whole is listed whole
    (but for run-only keys): the lower bound of "params = the keys the code reads minus RUN_ONLY"."""
    keys, whole = script_reads(ROOT / "stages" / f"{name}.py")
    have = covered(name)
    missing = {(s, k) for s, k in keys if (s, k) not in have} - _run_only()
    missing |= {(s, k) for s in whole for k in SCHEMA[s] if (s, k) not in have} - _run_only()
    assert not missing, f"stage '{name}' reads {sorted(f'{s}.{k}' for s, k in missing)}, not in its dvc.yaml params"


@pytest.mark.parametrize("name", list(STAGES))
def test_keys_listed_one_by_one_are_named_in_the_stage_code(name):
    """A key listed on its own is read somewhere in the stage's code: its name is a string there
    (`cfg["lr"]`) or a parameter name (models take their keys by signature)."""
    names: set[str] = set()
    for rel in import_closure(stage_module(name)):
        for node in ast.walk(ast.parse((ROOT / rel).read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                names.add(node.value)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
    unread = [e for e in listed_params(name) if "." in e and e.partition(".")[2] not in names]
    assert not unread, f"stage '{name}' lists {unread}, which no file it imports names"


# ------------------------------------------------------------------------------------ metrics
VERDICT = ["arch", "active_annual", "active_pvalue", "sharpe", "ic", "ic_pvalue", "dsr_10_trials", "mde_active"]


def declared_metrics() -> list[str]:
    """Metrics files in dvc.yaml's order: `dvc exp show`'s metric columns come in this order, before params."""
    out = []
    for stage in STAGES.values():
        for entry in stage.get("metrics", []):
            out += list(entry) if isinstance(entry, dict) else [entry]
    return out


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out |= flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v}
    return out


def test_exp_show_opens_with_the_verdict():
    """`dvc exp show` lists Experiment, Created, then the metrics files' keys in declared order: the
    verdict file first and alone before the detail; train's per-model losses are a plain out."""
    assert declared_metrics() == ["reports/verdict.json", "reports/metrics.json"]
    assert "--verdict reports/verdict.json" in " ".join(STAGES["evaluate"]["cmd"].split())
    assert {"reports/train/metrics.json": {"cache": False}} in STAGES["train"]["outs"]
    assert ["arch", *VERDICT_KEYS] == VERDICT
    metrics_file = ROOT / "reports" / "metrics.json"
    if not metrics_file.exists():
        pytest.skip("reports/metrics.json not in the working tree (run the pipeline)")
    detail = json.loads(metrics_file.read_text())
    made = verdict_metrics(detail, "lstm")
    assert list(made) == VERDICT
    assert all(made[k] == detail[s][n] for k, (s, n) in VERDICT_KEYS.items())  # a copy: metrics.json keeps all
    verdict_file = ROOT / "reports" / "verdict.json"
    assert verdict_file.exists(), "reports/verdict.json is missing beside reports/metrics.json: rerun evaluate"
    first = list(flatten(json.loads(verdict_file.read_text())))
    assert first == VERDICT, f"reports/verdict.json holds {first}"
    saved = json.loads(verdict_file.read_text())
    assert {k: saved[k] for k in VERDICT_KEYS} == {k: made[k] for k in VERDICT_KEYS}  # one run wrote both


# -------------------------------------------------------------------------------------- plots
# Plotted columns that lib/tables.py does not define, and the file that writes each one.
WRITTEN_ELSEWHERE = {
    "epoch": "stages/train.py",
    "train_loss": "stages/train.py",
    "val_loss": "stages/train.py",
    "rolling_ic": "lib/evaluation/forecast.py",
    "cost_bps": "lib/evaluation/study.py",
    "active_annual": "lib/evaluation/study.py",
}


def table_names() -> set[str]:
    names: set[str] = set()
    for attr, value in vars(tables).items():
        if attr.isupper():
            items = value if isinstance(value, list | tuple | dict) else [value]
            names |= {v for v in items if isinstance(v, str)}
    return names


def test_plot_columns_are_the_names_the_code_writes():
    """Every x and y column of dvc.yaml's plots is a name from lib/tables.py (or, for the few it does
    not define, a string in the file that writes it), and a header column of the plotted file."""
    defined = table_names()
    assert not defined & set(WRITTEN_ELSEWHERE), "now in lib/tables.py: drop them from WRITTEN_ELSEWHERE"
    checked = 0
    for plot in DVC["plots"]:
        if isinstance(plot, str):
            continue  # an image
        ((title, spec),) = plot.items()
        for file, cols in spec["y"].items():
            cols = [spec["x"], *([cols] if isinstance(cols, str) else cols)]
            for col in cols:
                checked += 1
                if col in defined:
                    continue
                assert col in WRITTEN_ELSEWHERE, f"plot '{title}': column {col} is not a name in lib/tables.py"
                writer = ast.parse((ROOT / WRITTEN_ELSEWHERE[col]).read_text(encoding="utf-8"))
                assert any(isinstance(n, ast.Constant) and n.value == col for n in ast.walk(writer)), (title, col)
            if (ROOT / file).exists():  # committed (cache: false)
                header = (ROOT / file).read_text(encoding="utf-8").splitlines()[0].split(",")
                assert set(cols) <= set(header), f"plot '{title}': {file} has {header}, not {cols}"
    assert checked > 10
    books = [c for p in DVC["plots"] if isinstance(p, dict) for s in p.values() for c in s["y"].values()]
    assert books.count(tables.BOOKS) == 3  # equity, drawdown, rolling Sharpe: the books in lib/tables.py order
