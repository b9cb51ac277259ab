"""The layout holds: framework knowledge only in plug-ins, no Prefect in the library, no import circle
among the pipeline steps, and a new framework is one plug-in plus its registration."""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from trainflow import frameworks
from trainflow.errors import ConfigError
from trainflow.frameworks import Framework

ROOT = Path(__file__).resolve().parents[1]
FRAMEWORK_WORDS = re.compile(r"\b(xgboost|xgb|lightgbm|lgb|pytorch|torch)\b", re.IGNORECASE)
GENERIC = [ROOT / "trainflow" / "pipeline", ROOT / "trainflow" / "registry.py", ROOT / "flows", ROOT / "tasks"]


def _python_files(paths: list[Path]) -> list[Path]:
    return sorted(f for p in paths for f in ([p] if p.is_file() else p.rglob("*.py")))


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def framework_knowledge(path: Path) -> list[str]:
    """String literals (not docstrings) and imports in `path` that name a framework."""
    tree = ast.parse(path.read_text())
    docs = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            if FRAMEWORK_WORDS.search(node.value):
                found.append(f"{path.name}:{node.lineno}: literal {node.value[:60]!r}")
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            names = [a.name for a in node.names]
            if any(FRAMEWORK_WORDS.search(m.replace(".", " ").replace("_", " ")) for m in modules) or \
                    any(re.match(r"(XGB|LightGBM|PyTorch|Torch)", n) for n in names):
                found.append(f"{path.name}:{node.lineno}: imports {modules}")
    return found


def test_no_framework_knowledge_outside_the_plugins():
    found = [hit for f in _python_files(GENERIC) for hit in framework_knowledge(f)]
    assert found == []


def test_the_check_finds_framework_knowledge(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text('"""Mentions xgboost in a docstring, which is fine."""\n'
                     'from trainflow.distributors.xgboost import XGBEstimator\n'
                     'if framework == "pytorch":\n    pass\n')
    found = framework_knowledge(probe)
    assert len(found) == 2 and "imports" in found[0] and "'pytorch'" in found[1]


def test_the_library_never_imports_prefect():
    """Every library module but the composition root (the CLI) imports without Prefect or the app."""
    code = (
        "import pkgutil, importlib, sys, trainflow\n"
        "names = [m.name for m in pkgutil.walk_packages(trainflow.__path__, 'trainflow.')]\n"
        "skip = {'trainflow.cli'}\n"
        "for name in names:\n"
        "    if name not in skip:\n"
        "        importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('prefect', 'prefect_ray', 'flows', 'tasks'))\n"
        "print(len(names), bad[:5])\n"
        "sys.exit(1 if bad else 0)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    assert int(out.stdout.split()[0]) > 40  # it really walked the package


def test_the_placement_policy_needs_no_cluster():
    """Policy modules are pure: deciding a placement imports no Ray (tested without a cluster)."""
    code = ("import sys, trainflow.distributors.placement, trainflow.distributors.torch_device\n"
            "sys.exit(1 if 'ray' in sys.modules else 0)\n")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=120).returncode == 0


def _imports_of(path: Path, package: str) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == package:
                out |= {f"{package}.{a.name}" for a in node.names}
            elif node.module.startswith(package + "."):
                out.add(node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith(package + ".")}
    return out


def test_no_import_circle_among_the_pipeline_steps():
    folder = ROOT / "trainflow" / "pipeline"
    graph = {f"trainflow.pipeline.{f.stem}": _imports_of(f, "trainflow.pipeline") for f in folder.glob("*.py")
             if f.stem != "__init__"}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in graph.get(node, ()):
            assert state.get(nxt) != 1, f"import circle: {' -> '.join(trail + [node, nxt])}"
            if nxt not in state:
                visit(nxt, trail + [node])
        state[node] = 2

    for module in graph:
        if module not in state:
            visit(module, [])


# ----------------------------------------------------------------------------- a new framework
def test_a_new_framework_is_one_plugin_and_its_registration(ray_cluster, warehouse, tmp_path, monkeypatch):
    """The plug-in above goes through every pipeline step (load, plan, a Ray fit, evaluate, register)
    and a later run loads it as the champion, with no change to trainflow."""
    import duckdb

    from trainflow.pipeline import evaluate, fit, load, register
    from trainflow.pipeline import plan as plan_step
    from trainflow.pipeline.champion import find_champion
    from trainflow.spec import JobSpec, parse_spec

    with pytest.raises(ConfigError, match=r"framework 'mean' is not known; known frameworks: xgboost, lightgbm, pytorch"):
        frameworks.get("mean")
    from tests.mean_framework import MeanFramework

    plugin = frameworks.register(MeanFramework())
    try:
        assert frameworks.get("mean") is plugin and "mean" in frameworks.names()
        features = ["age", "income", "credit_score"]
        tables = {"train": {"table": "TRAINING_DATA", "database": str(warehouse)},
                  "eval": {"table": "EVAL_DATA", "database": str(warehouse)}}
        spec = parse_spec({"name": "mean-exp", "data": tables, "features": features, "label": "default_risk",
                           "register": {"model_name": "mean-model"}, "trainer": {"framework": "mean"}})
        assert (spec.trainer.resolved_objective, spec.task) == ("regression", "regression")  # the plug-in's default
        schema = JobSpec.model_json_schema()["$defs"]["TrainerSpec"]["properties"]["framework"]
        assert "mean" in schema["enum"]  # a choice in the Prefect UI's form
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
        monkeypatch.chdir(tmp_path)

        data = load.load(spec)
        plan = plan_step.plan(spec, data)
        outcome = fit.fit(spec, data, plan)
        with duckdb.connect(str(warehouse), read_only=True) as con:
            train_mean = con.execute("SELECT avg(default_risk) FROM TRAINING_DATA").fetchone()[0]
            eval_rmse = con.execute(f"SELECT sqrt(avg(power(default_risk - {train_mean!r}, 2))) "
                                    "FROM EVAL_DATA").fetchone()[0]
        assert outcome.model.mean == pytest.approx(train_mean, rel=1e-12)  # both shards summed, once
        metrics = evaluate.evaluate(spec, outcome, data)
        assert metrics["rmse"] == pytest.approx(eval_rmse, rel=1e-6)  # streamed sums
        model = register.register(spec, outcome, metrics, data)
        assert model.promoted and model.version == "1"
        run = MlflowClient().get_run(model.run_id)
        assert run.data.tags["trainflow.framework"] == "mean" and run.data.params["objective"] == "regression"

        # A later run finds it as champion and loads it with the same plug-in, ready to score.
        found = find_champion("mean-model", "regression")
        assert found.unscorable == "" and found.framework == "mean"
        assert found.model.input_cols == features
        example = data.eval.to_pandas(limit=3)[features]
        assert list(found.model.adapter.predict(found.model.model, example.to_numpy())) == [outcome.model.mean] * 3
    finally:
        frameworks._REGISTERED.pop("mean", None)


PLUGIN_PACKAGE = """
from trainflow.frameworks import Framework


class ConstantFramework(Framework):
    name = "constant"
    objectives = {"regression": "regression", "binary": "binary"}
    default_objective = "binary"


FRAMEWORK = ConstantFramework()
"""


def test_a_plugin_package_is_found_by_its_entry_point(tmp_path):
    """A separately installed package declares its plug-in in the `trainflow.frameworks` entry-point
    group: every process that reads a spec (driver, Ray worker, served deployment) then knows it."""
    (tmp_path / "constant_plugin.py").write_text(PLUGIN_PACKAGE)
    info = tmp_path / "constant_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: constant-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[trainflow.frameworks]\nconstant = constant_plugin:FRAMEWORK\n")
    code = (
        "from trainflow import frameworks\n"
        "from trainflow.spec import parse_spec\n"
        "spec = parse_spec({'name': 'job', 'data': {'train': {'parquet': 't.parquet'}}, 'features': ['a'],"
        " 'label': 'y', 'register': {'model_name': 'm'}, 'trainer': {'framework': 'constant'}})\n"
        "print(frameworks.names(), spec.trainer.resolved_objective, spec.task, type(frameworks.get('constant')).__name__)\n"
    )
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split(") ")[1].split() == ["binary", "binary", "ConstantFramework"]
    assert "'constant'" in out.stdout.split(") ")[0]


def test_a_plugin_without_objectives_is_refused():
    class Nameless(Framework):
        name = "nameless"

    with pytest.raises(ConfigError, match="needs a name, its objectives and a default objective"):
        frameworks.register(Nameless())
