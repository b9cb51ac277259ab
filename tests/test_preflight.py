"""What a run on an existing cluster ships, and the preflight's judgement (policy: no cluster needed)."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from trainflow.cluster.preflight import Location, NodeReport, Problem, Service, judge
from trainflow.cluster.runtime_env import plan_shipment, spec_modules
from trainflow.errors import PreflightError, ResourceError

VERSIONS = {"ray": "2.60.0", "xgboost": "3.2.0", "lightgbm": "4.7.0", "torch": "2.13.0", "pyarrow": "25.0.1"}
DRIVER = NodeReport("driver", "10.0.0.1", "3.11", VERSIONS)
STORAGE = Location("TRAINFLOW_STORAGE", "/mnt/runs", "/mnt/runs/.trainflow-preflight/x.probe", "x")


def node(address: str = "10.0.0.1", **changes) -> NodeReport:
    fields = {"node_id": f"n-{address}", "address": address, "python": "3.11", "versions": VERSIONS}
    return NodeReport(**{**fields, **changes})


def test_a_healthy_cluster_has_no_problems():
    assert judge(DRIVER, [node(), node("10.0.0.2")], {}, [STORAGE],
                 [Service("PREFECT_API_URL", "http://10.0.0.1:4200/api")]) == []


def test_version_skew_names_the_node_the_package_and_the_pin():
    problems = judge(DRIVER, [node(), node("10.0.0.2", versions={**VERSIONS, "xgboost": "3.1.0", "torch": None})],
                     {}, [], [])
    text = [str(p) for p in problems]
    assert len(problems) == 2
    assert "Node 10.0.0.2 has xgboost 3.1.0, the driver xgboost 3.2.0" in text[0]
    assert "pip install 'xgboost==3.2.0'" in text[0]
    assert "torch (not installed)" in text[1]


def test_another_python_is_a_problem():
    (problem,) = judge(DRIVER, [node("10.0.0.2", python="3.12")], {}, [], [])
    assert "Python 3.12, the driver 3.11" in problem.what


def test_storage_a_node_cannot_read_names_the_setting_and_the_shared_fix():
    reports = [node(), node("10.0.0.2", unreadable={"TRAINFLOW_STORAGE": "FileNotFoundError: no such file"})]
    (problem,) = judge(DRIVER, reports, {}, [STORAGE], [])
    assert "TRAINFLOW_STORAGE is '/mnt/runs'" in problem.what and "10.0.0.2" in problem.what
    assert "local to the driver's machine" in problem.what
    assert problem.fix.startswith("set TRAINFLOW_STORAGE to storage every node and the driver share")


def test_the_default_storage_tells_which_variable_to_set():
    default = Location("TRAINFLOW_STORAGE", "/tmp/trainflow-runs", "/tmp/p", "x", default="a temp folder")
    (problem,) = judge(DRIVER, [node("10.0.0.2", unreadable={default.variable: "missing"})], {}, [default], [])
    assert "unset: a temp folder" in problem.what and problem.fix.startswith("set TRAINFLOW_STORAGE to")


def test_what_must_outlive_a_ray_job_may_not_live_in_its_working_folder():
    job = "/tmp/ray/session_1/runtime_resources/working_dir_files/_ray_pkg_1"
    registry = Location("MLFLOW_TRACKING_URI", job, f"{job}/p", "x", default="a SQLite file in the working folder")
    artifacts = Location("TRAINFLOW_ARTIFACTS", f"{job}/.trainflow/artifacts", "p", "x")
    checkpoints = Location("TRAINFLOW_STORAGE", f"{job}/runs", "p", "x")  # only needed while the job runs
    elsewhere = Location("MLFLOW_TRACKING_URI", "/mnt/shared/mlflow", "p", "x")
    first, second = judge(DRIVER, [node()], {}, [registry, artifacts, checkpoints], [], temporary_folder=job)
    assert "unset: a SQLite file in the working folder" in first.what and "Ray deletes" in first.what
    assert "every model registered in it" in first.what and '"env_vars": {"MLFLOW_TRACKING_URI"' in first.fix
    assert second.what.startswith("TRAINFLOW_ARTIFACTS is") and "PyTorch artifacts" in second.what
    assert judge(DRIVER, [node()], {}, [elsewhere, checkpoints], [], temporary_folder=job) == []
    assert judge(DRIVER, [node()], {}, [registry, artifacts], []) == []  # not a Ray job: the folder stays


def test_an_unreachable_server_is_named_with_how_to_run_one_they_reach():
    svc = Service("MLFLOW_TRACKING_URI", "http://10.0.0.1:5000")
    (problem,) = judge(DRIVER, [node("10.0.0.2", unreachable={svc.name: "timed out"})], {}, [], [svc])
    assert "MLFLOW_TRACKING_URI=http://10.0.0.1:5000 is not reachable from node(s) 10.0.0.2 (timed out)" in problem.what
    assert "mlflow server --host 0.0.0.0" in problem.fix


def test_a_loopback_server_url_is_refused_when_nodes_are_other_machines():
    svc = Service("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    assert judge(DRIVER, [node()], {}, [], [svc]) == []  # one machine: loopback is fine
    (problem,) = judge(DRIVER, [node(), node("10.0.0.2")], {}, [], [svc])
    assert "loopback" in problem.what and "10.0.0.2" in problem.what
    assert "prefect server start --host 0.0.0.0" in problem.fix


def test_a_node_that_did_not_answer_is_a_problem():
    (problem,) = judge(DRIVER, [], {"10.0.0.3": "no answer within 10s"}, [], [])
    assert "Node 10.0.0.3 did not answer the preflight (no answer within 10s)" in problem.what


def test_preflight_error_lists_every_problem_and_survives_pickling():
    err = PreflightError([Problem("A is wrong.", "fix A."), Problem("B is wrong.", "fix B.")])
    assert isinstance(err, ResourceError)
    assert "2 problem(s)" in str(err) and "  - A is wrong. Fix: fix A." in str(err)
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is PreflightError and again.problems == err.problems and str(again) == str(err)


# ------------------------------------------------------------------------------------ the shipment
def test_the_shipment_carries_the_project_the_named_modules_and_absolute_settings(tmp_path, monkeypatch):
    user = tmp_path / "src" / "mytrain"
    user.mkdir(parents=True)
    (user / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    monkeypatch.chdir(tmp_path)
    environ = {"TRAINFLOW_STORAGE": "runs", "TRAINFLOW_ARTIFACTS": "s3://bucket/art",
               "MLFLOW_TRACKING_URI": "http://mlflow:5000", "PREFECT_API_URL": "http://prefect:4200/api",
               "TRAINFLOW_SHIP_ENV": "MY_TOKEN", "MY_TOKEN": "t", "HOME": "/root"}
    shipment = plan_shipment(environ, modules=["mytrain.loops", "numpy"])
    names = [Path(p).name for p in shipment.py_modules]
    assert names == ["trainflow", "flows", "tasks", "mytrain"]  # numpy is installed: the nodes have the pins
    assert shipment.env_vars == {"TRAINFLOW_STORAGE": str(tmp_path / "runs"), "TRAINFLOW_ARTIFACTS": "s3://bucket/art",
                                 "MLFLOW_TRACKING_URI": "http://mlflow:5000",
                                 "PREFECT_API_URL": "http://prefect:4200/api", "MY_TOKEN": "t"}
    env = shipment.runtime_env()
    assert env["py_modules"] == list(shipment.py_modules) and "__pycache__" in env["excludes"]


def test_no_code_when_the_nodes_image_has_it_and_a_ray_jobs_own_environment_wins():
    assert plan_shipment({"TRAINFLOW_SHIP_CODE": "0"}).py_modules == ()
    shipment = plan_shipment({"PREFECT_API_URL": "http://p/api", "MLFLOW_TRACKING_URI": "http://m",
                              "TRAINFLOW_ARTIFACTS": "s3://a"})
    job = {"py_modules": ["s3://bucket/code.zip"], "env_vars": {"PREFECT_API_URL": "http://job/api"}}
    env = shipment.runtime_env(job)
    assert "py_modules" not in env and env["env_vars"] == {"MLFLOW_TRACKING_URI": "http://m", "TRAINFLOW_ARTIFACTS": "s3://a"}
    assert json.dumps(env)  # what ray.init receives is plain data


def test_spec_modules_are_the_schema_class_and_the_train_func():
    from trainflow.spec import parse_spec

    spec = parse_spec({"name": "j", "data": {"train": {"parquet": "x.parquet"}}, "schema": "myschemas.credit:Checks",
                       "trainer": {"framework": "pytorch", "train_func": "mytrain.loops:train"},
                       "register": {"model_name": "m"}, "label": "y", "features": ["a"]}, source="test")
    assert spec_modules(spec) == ["myschemas.credit", "mytrain.loops"]


@pytest.mark.parametrize("setting", ["TRAINFLOW_STORAGE", "TRAINFLOW_SCRATCH", "TRAINFLOW_ARTIFACTS"])
def test_a_uri_setting_is_passed_as_is(setting):
    assert plan_shipment({setting: "s3://b/x"}).env_vars[setting] == "s3://b/x"


def test_trainflows_relative_defaults_reach_the_workers_resolved(tmp_path, monkeypatch):
    """A worker's working folder is not the driver's: the default MLflow file and artifact folder
    are sent as absolute paths of the driver's working folder."""
    monkeypatch.chdir(tmp_path)
    env_vars = plan_shipment({}).env_vars
    assert env_vars == {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
                        "TRAINFLOW_ARTIFACTS": str(tmp_path / ".trainflow" / "artifacts")}
