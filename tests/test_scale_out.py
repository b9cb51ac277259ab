"""`trainflow run` against an existing multi-node Ray cluster (`RAY_ADDRESS`): the project's code and the
modules a spec names travel with the run, every node is checked first, and a bad setup is refused
before any worker starts. The cluster is two raylets on this host (`ray.cluster_utils.Cluster`)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PYTORCH_SPEC = ROOT / "deployments" / "specs" / "credit_risk_pytorch.yaml"
TRAINFLOW = str(Path(sys.executable).with_name("trainflow"))

# Starts two raylets (1 CPU each, each with its own temp folder as on two hosts; the head with Ray's
# job server and Ray Client server on 127.0.0.1), runs each command against them with RAY_ADDRESS (the
# GCS address unless the command sets it), stops them. In a command, "{jobs}" stands for the job
# server's address and "{client}" for the ray:// address.
ON_CLUSTER = textwrap.dedent(
    """
    import json, os, socket, subprocess, sys, tempfile, time
    from ray.cluster_utils import Cluster

    out, commands = sys.argv[1], json.loads(sys.argv[2])
    def free_port():
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]
    port, client_port = free_port(), free_port()
    # Each node's dashboard agent on a free port: Ray's default (52365) is taken by any other local Ray
    # (the test session's own), and a head whose agent cannot bind takes no jobs.
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_port": port,
        "ray_client_server_port": client_port, "dashboard_agent_listen_port": free_port()})
    cluster.add_node(num_cpus=1, temp_dir=tempfile.mkdtemp(prefix="tfray-node-"),
                     dashboard_agent_listen_port=free_port())
    cluster.wait_for_nodes()
    places = {"{jobs}": f"http://127.0.0.1:{port}", "{client}": f"ray://127.0.0.1:{client_port}"}
    if any("{jobs}" in a for cmd in commands for a in cmd["argv"]):
        # The job server answers before its agent has registered ("No available agent to submit job,
        # please try again later"); a busy machine takes seconds more. Wait until it takes a job.
        from ray.job_submission import JobSubmissionClient

        jobs, deadline = JobSubmissionClient(places["{jobs}"]), time.monotonic() + 180
        while True:
            try:
                jobs.submit_job(entrypoint="python -c pass")
                break
            except RuntimeError as exc:
                if "No available agent" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(1)
    def fill(text):
        for key, value in places.items():
            text = text.replace(key, value)
        return text
    results = []
    try:
        for cmd in commands:
            env = {**os.environ, "RAY_ADDRESS": cluster.address, **{k: fill(v) for k, v in cmd["env"].items()}}
            argv = [fill(a) for a in cmd["argv"]]
            done = subprocess.run(argv, cwd=cmd["cwd"], env=env, capture_output=True, text=True,
                                  timeout=900)  # a busy 2-core machine: one run took 432 s with both cores burnt
            logs = ""
            if done.returncode:  # what Ray's own servers said, for the failure's message
                import glob
                for path in sorted(glob.glob(os.path.join(os.environ["RAY_TMPDIR"], "**", "logs",
                                                          "ray_client_server*.err"), recursive=True)):
                    logs += f"== {path}\\n" + open(path).read()[-1500:]
            results.append({"rc": done.returncode, "stdout": done.stdout, "stderr": done.stderr + logs})
    finally:
        with open(out, "w") as fh:
            json.dump(results, fh)
        cluster.shutdown()
    """
)

# A user's training module outside the project and outside the nodes' Python path: it can only reach
# a Ray worker through the run's runtime environment. On each worker it says where it was loaded from.
TRAIN_MODULE = textwrap.dedent(
    """
    import json, os

    from trainflow.examples.credit_mlp import train_func as example


    def train_func():
        import ray
        import trainflow
        from trainflow.distributors.pytorch import get_context

        ctx = get_context()
        with open(os.path.join(os.environ["PROBE_OUT"], f"rank{ctx.get_rank()}.json"), "w") as fh:
            json.dump({"node": ray.get_runtime_context().get_node_id(), "node_rank": ctx.get_node_rank(),
                       "module_file": __file__, "trainflow_file": trainflow.__file__}, fh)
        example()
    """
)


def _project(tmp_path: Path, warehouse: Path) -> tuple[Path, dict]:
    """A user's project folder: a PyTorch spec naming `train_func` in src/mytrain.py, and its settings."""
    project, probes = tmp_path / "project", tmp_path / "probes"
    (project / "src").mkdir(parents=True)
    probes.mkdir()
    (project / "src" / "mytrain.py").write_text(TRAIN_MODULE)
    spec = yaml.safe_load(PYTORCH_SPEC.read_text())
    spec.pop("schedule")
    spec["name"] = spec["register"]["model_name"] = "cluster-run"
    spec["trainer"]["train_func"] = "mytrain:train_func"
    spec["trainer"]["hyper_params"]["epochs"] = "3"
    spec["trainer"]["scaling"] = {"num_nodes": 2, "num_workers_per_node": 1, "num_cpus": 1, "num_gpus": 0}
    spec["data"]["train"]["database"] = spec["data"]["eval"]["database"] = str(warehouse)
    (project / "spec.yaml").write_text(yaml.safe_dump(spec))
    env = {"PYTHONPATH": str(project / "src"),  # the driver's only: the raylets were started without it
           "PROBE_OUT": str(probes), "TRAINFLOW_SHIP_ENV": "PROBE_OUT",
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
           "TRAINFLOW_STORAGE": str(tmp_path / "runs"), "TRAINFLOW_ARTIFACTS": str(tmp_path / "artifacts")}
    return project, env


def _on_cluster(tmp_path: Path, commands: list[dict]) -> list[dict]:
    out = tmp_path / "results.json"
    # The nodes' `python` (a Ray job's entrypoint runs on the head node) is this environment's
    env = dict(os.environ, RAY_TMPDIR=tempfile.mkdtemp(prefix="tfray-"),
               PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    for name in ("RAY_ADDRESS", "PYTHONPATH"):
        env.pop(name, None)
    subprocess.run([sys.executable, "-c", ON_CLUSTER, str(out), json.dumps(commands)], env=env, check=True,
                   timeout=1900, cwd=tmp_path)
    return json.loads(out.read_text())


@pytest.mark.slow  # two raylets and two CLI runs
@pytest.mark.timeout(2000)
def test_a_pytorch_run_on_a_two_node_cluster_ships_its_code_and_a_bad_setup_is_refused(tmp_path, warehouse,
                                                                                   prefect_api):
    project, env = _project(tmp_path, warehouse)
    good = {"argv": [TRAINFLOW, "run", "spec.yaml", "--json"], "cwd": str(project), "env": env}
    unreachable = dict(good, env={**env, "MLFLOW_TRACKING_URI": "http://127.0.0.1:9/"})  # discard port: closed
    ok, refused = _on_cluster(tmp_path, [good, unreachable])

    assert ok["rc"] == 0, ok["stdout"][-3000:] + ok["stderr"][-3000:]
    result = json.loads(ok["stdout"].strip().splitlines()[-1])
    assert result["version"] == "1" and result["metrics"]["rmse"] < 0.3
    # Each rank ran on its own node, with the user's module and trainflow from the run's runtime
    # environment: not from the driver's PYTHONPATH or checkout, which the nodes do not have.
    ranks = [json.loads((tmp_path / "probes" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["node"] != ranks[1]["node"] and sorted(r["node_rank"] for r in ranks) == [0, 1]
    for r in ranks:
        assert "runtime_resources" in r["module_file"] and "runtime_resources" in r["trainflow_file"], r

    # MLflow at a closed port: refused by the preflight with the fix, before any worker started.
    assert refused["rc"] != 0
    text = refused["stdout"] + refused["stderr"]
    assert "The Ray cluster is not ready for this run" in text
    assert "MLFLOW_TRACKING_URI=http://127.0.0.1:9/ is not reachable from node(s)" in text
    assert "mlflow server --host 0.0.0.0" in text and "Traceback" not in text


def _boosting_spec(folder: Path, framework: str, warehouse: Path, train_sql: str | None = None) -> Path:
    spec = yaml.safe_load((ROOT / "deployments" / "specs" / f"credit_risk_{framework}.yaml").read_text())
    spec.pop("schedule")
    spec["name"] = spec["register"]["model_name"] = f"cluster-{framework}"
    spec["data"]["train"] = ({"sql": train_sql, "database": str(warehouse)} if train_sql
                             else {"table": "TRAINING_DATA", "database": str(warehouse)})
    spec["data"]["eval"]["database"] = str(warehouse)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec))
    return folder / "spec.yaml"


def _plain_rmse(framework: str, warehouse: Path) -> float:
    """The spec's model trained in one process with the framework itself, on the same tables."""
    import duckdb
    import numpy as np

    features = ["age", "income", "credit_score"]
    with duckdb.connect(str(warehouse), read_only=True) as con:
        train = con.sql("SELECT * FROM TRAINING_DATA").df()
        ev = con.sql("SELECT * FROM EVAL_DATA").df()
    if framework == "xgboost":
        import xgboost as xgb

        booster = xgb.train({"objective": "reg:squarederror", "max_depth": 6, "learning_rate": 0.1},
                            xgb.DMatrix(train[features], label=train.default_risk), 100)
        pred = booster.predict(xgb.DMatrix(ev[features]))
    else:
        import lightgbm as lgb

        booster = lgb.train({"objective": "regression", "num_leaves": 31, "learning_rate": 0.1, "verbose": -1},
                            lgb.Dataset(train[features], label=train.default_risk), 100)
        pred = booster.predict(ev[features])
    return float(np.sqrt(np.mean((pred - ev.default_risk.to_numpy()) ** 2)))


def _result(output: str) -> dict:
    return json.loads(next(line for line in reversed(output.splitlines()) if line.startswith('{"name"')))


@pytest.mark.slow  # two raylets, a CLI run over Ray Client and a Ray job
@pytest.mark.timeout(2000)
def test_boosting_on_two_nodes_through_ray_client_and_ray_jobs_matches_one_process(tmp_path, warehouse,
                                                                                     prefect_api):
    import duckdb
    import mlflow
    import numpy as np
    import pandas as pd

    settings = {"PREFECT_API_URL": prefect_api, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
                "TRAINFLOW_STORAGE": str(tmp_path / "runs"), "TRAINFLOW_ARTIFACTS": str(tmp_path / "artifacts")}
    # LightGBM on rows sorted by a feature (each node holds another range of income) as Ray's recommended
    # remote driver: a Ray job whose working folder is the user's project; the entrypoint runs on the
    # head node with the settings the job passes (Ray deletes its folder when the job ends).
    _boosting_spec(tmp_path / "lgb", "lightgbm", warehouse, "SELECT * FROM TRAINING_DATA ORDER BY income")
    lightgbm_job = {"argv": [str(Path(sys.executable).with_name("ray")), "job", "submit", "--address", "{jobs}",
                             "--working-dir", str(tmp_path / "lgb"), "--runtime-env-json",
                             json.dumps({"env_vars": settings}), "--",
                             "python", "-m", "trainflow.cli", "run", "spec.yaml", "--json"],
                    "cwd": str(tmp_path), "env": {}}
    # XGBoost through Ray Client (ray://); a query source there is refused (its snapshot is a streaming
    # task, which Ray Client cannot run) with the ways out, before anything is read.
    _boosting_spec(tmp_path / "xgb", "xgboost", warehouse)
    client = {**settings, "RAY_ADDRESS": "{client}"}
    xgboost_run = {"argv": [TRAINFLOW, "run", "spec.yaml", "--json"], "cwd": str(tmp_path / "xgb"), "env": client}
    query_validate = {"argv": [TRAINFLOW, "validate", str(tmp_path / "lgb" / "spec.yaml")], "cwd": str(tmp_path),
                      "env": client}
    lgb_done, xgb_done, refused = _on_cluster(tmp_path, [lightgbm_job, xgboost_run, query_validate])

    for framework, done in (("lightgbm", lgb_done), ("xgboost", xgb_done)):
        text = done["stdout"] + done["stderr"]
        assert done["rc"] == 0, text[-4000:]
        assert "Placement: 2 worker(s), each 1 CPU(s)" in text, text[-4000:]  # default scaling: every node
        result = _result(done["stdout"])
        plain = _plain_rmse(framework, warehouse)
        assert abs(result["metrics"]["rmse"] - plain) <= 0.02 * plain, (framework, result["metrics"], plain)
        # The registered version outlives the Ray job's temporary folder: artifacts next to the store.
        assert "runtime_resources" not in result["artifact_uri"], result["artifact_uri"]
        mlflow.set_tracking_uri(settings["MLFLOW_TRACKING_URI"])
        model = mlflow.pyfunc.load_model(result["uri"])  # after the cluster (and the job's folder) is gone
        with duckdb.connect(str(warehouse), read_only=True) as con:
            ev = con.sql("SELECT age, income, credit_score, default_risk FROM EVAL_DATA").df()
        pred = np.asarray(model.predict(pd.DataFrame(ev[["age", "income", "credit_score"]])), dtype=float)
        rmse = float(np.sqrt(np.mean((pred - ev.default_risk.to_numpy()) ** 2)))
        assert rmse == pytest.approx(result["metrics"]["rmse"], rel=1e-4), framework
    assert "succeeded" in lgb_done["stdout"] + lgb_done["stderr"]  # the Ray job's own status
    text = refused["stdout"] + refused["stderr"]
    assert refused["rc"] != 0 and "Traceback" not in text, text[-3000:]
    assert "Ray Client (RAY_ADDRESS=ray://...) does not support" in text and "ray job submit" in text, text[-3000:]


# Three 1-CPU nodes and a head with none: a 2-worker fit, then rank 0's whole node is removed (its
# raylet and every process on it) at round 25; the fit must resume from its checkpoint elsewhere. First
# XGBoost, then (a replacement node added each time) LightGBM and PyTorch.
NODE_LOSS = textwrap.dedent(
    """
    import json, os, sys, threading, time
    import numpy as np
    import ray
    from ray.cluster_utils import Cluster

    import socket
    def free_port():
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]
    def add_node():  # its dashboard agent on a free port: a raylet whose agent cannot bind exits with it
        return cluster.add_node(num_cpus=1, dashboard_agent_listen_port=free_port())

    out = sys.argv[1]
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "dashboard_agent_listen_port": free_port()})
    workers = [add_node() for _ in range(3)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)

    import lightgbm as lgb
    import xgboost as xgb
    from tests.conftest import regression_frame
    from trainflow.data import DataConnector
    from trainflow.distributors.lightgbm import LightGBMEstimator, LightGBMScalingConfig
    from trainflow.distributors.xgboost import XGBEstimator, XGBScalingConfig

    def xgb_stall_at(at, marker):
        class Stall(xgb.callback.TrainingCallback):
            trainflow_resumable = True

            def after_iteration(self, model, epoch, evals_log):
                if model.num_boosted_rounds() == at and not os.path.exists(marker):
                    with open(marker, "w") as fh:  # says which node to take away, then waits for it
                        fh.write(ray.get_runtime_context().get_node_id())
                    time.sleep(300)
                return False
        return Stall()

    def lgb_stall_at(at, marker):
        def stall(env):
            if env.iteration + 1 == at and not os.path.exists(marker):
                with open(marker, "w") as fh:
                    fh.write(ray.get_runtime_context().get_node_id())
                time.sleep(300)
        stall.order = 50
        stall.trainflow_resumable = True
        return stall

    def remove_when_asked(marker, removed, before=lambda: None):
        deadline = time.monotonic() + 600
        while not os.path.exists(marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        before()
        node_id = open(marker).read()
        node = next(n for n in workers if n.node_id == node_id)
        cluster.remove_node(node, allow_graceful=False)
        removed.append(node_id)

    frame, holdout = regression_frame(4000, seed=5), regression_frame(1000, seed=6)
    features = ["f0", "f1", "f2", "f3"]
    x, y = holdout[features].to_numpy(), holdout["y"].to_numpy()
    cases = {
        "xgboost": (XGBEstimator, dict(n_estimators=40, params={"max_depth": 4}, checkpoint_every=10,
                                       scaling_config=XGBScalingConfig(num_workers=2)), xgb_stall_at,
                    lambda b: b.num_boosted_rounds(), lambda b: b.inplace_predict(x)),
        "lightgbm": (LightGBMEstimator, dict(n_estimators=40, params={"num_leaves": 15}, checkpoint_every=10,
                                             scaling_config=LightGBMScalingConfig(num_workers=2)), lgb_stall_at,
                     lambda b: b.num_trees(), lambda b: b.predict(x)),
    }
    results = {}
    helpers = {}  # where each fit's helper actors were: the head node, which no node loss takes

    def helpers_seen():
        from ray.util.state import list_actors

        for actor in list_actors(filters=[("state", "=", "ALIVE")], raise_on_missing_output=False):
            if actor.class_name.endswith(("_Pool", "_Rendezvous")):
                helpers.setdefault(actor.class_name.rsplit(".", 1)[-1], set()).add(actor.node_id == head)

    from trainflow.distributors.pool import head_node
    head = head_node()
    for name, (estimator, kw, stall_at, rounds, predict) in cases.items():
        if name != "xgboost":
            workers.append(add_node())  # a replacement for the node taken away
            cluster.wait_for_nodes()
        marker, removed = f"{out}.{name}.node", []
        threading.Thread(target=remove_when_asked, args=(marker, removed, helpers_seen), daemon=True).start()
        start = time.perf_counter()
        est = estimator(callbacks=[stall_at(25, marker)], **kw)
        booster = est.fit(DataConnector.from_dataframe(frame), features, "y", eval_set=DataConnector.from_dataframe(holdout))
        took = time.perf_counter() - start
        whole = estimator(**kw).fit(DataConnector.from_dataframe(frame), features, "y")
        rmse = lambda b: float(np.sqrt(np.mean((predict(b) - y) ** 2)))
        history = est.get_eval_results()
        results[name] = {"removed": removed, "rounds": rounds(booster), "rmse": rmse(booster),
                         "whole_rmse": rmse(whole), "history": len(next(iter(next(iter(history.values())).values()))),
                         "alive": len([n for n in ray.nodes() if n["Alive"]]), "seconds": took}

    # PyTorch (Ray Train's worker group): rank 0 reports epoch 3 with its checkpoint, then its node goes.
    from trainflow.data import ShardedDataConnector
    from trainflow.data.demo import credit_frame
    from trainflow.distributors.pytorch import PyTorchDistributor, PyTorchScalingConfig, WorkerResourceConfig

    def torch_stall_after(epoch, marker, log):
        def train_func():
            from trainflow.distributors.pytorch import get_context
            from trainflow.examples.credit_mlp import train_func as credit

            context = get_context()
            report = context.report

            def report_then_stall(metrics, checkpoint=None):
                if context.get_rank() == 0 and "epoch" in metrics:
                    with open(log, "a") as fh:
                        fh.write(f"{ray.get_runtime_context().get_node_id()} {metrics['epoch']}\\n")
                report(metrics, checkpoint)
                if context.get_rank() == 0 and metrics.get("epoch") == epoch and not os.path.exists(marker):
                    time.sleep(2)  # the controller registers a reported checkpoint at its next poll (0.2 s)
                    with open(marker, "w") as fh:
                        fh.write(ray.get_runtime_context().get_node_id())
                    time.sleep(300)

            context.report = report_then_stall
            credit()
        return train_func

    workers.append(add_node())
    cluster.wait_for_nodes()
    marker, log, removed = f"{out}.pytorch.node", f"{out}.pytorch.log", []
    threading.Thread(target=remove_when_asked, args=(marker, removed), daemon=True).start()
    start = time.perf_counter()
    result = PyTorchDistributor(
        torch_stall_after(3, marker, log),
        PyTorchScalingConfig(num_nodes=2, num_workers_per_node=1,
                             resource_requirements_per_worker=WorkerResourceConfig(num_cpus=1, num_gpus=0)),
    ).run(dataset_map={"train": ShardedDataConnector.from_dataframe(credit_frame(3000, seed=7))},
          hyper_params={"epochs": "6", "batch_size": "64"}, artifact_stage_location=out + ".stage")
    epochs = [line.split() for line in open(log).read().splitlines()]
    results["pytorch"] = {"removed": removed, "seconds": time.perf_counter() - start,
                          "alive": len([n for n in ray.nodes() if n["Alive"]]),
                          "history": [m["epoch"] for m in result.get_metrics_history() if "epoch" in m],
                          "rank0": epochs, "last_epoch": result.get_metrics().get("epoch")}
    results["helpers_on_head"] = {name: sorted(seen) for name, seen in helpers.items()}
    with open(out, "w") as fh:
        json.dump(results, fh)
    ray.shutdown()
    cluster.shutdown()
    """
)


@pytest.mark.slow  # six raylets in all, a node removed mid-fit three times (~2.5 min)
def test_a_fit_survives_losing_a_whole_node_and_resumes_on_another(tmp_path):
    out = tmp_path / "node-loss.json"
    env = dict(os.environ, RAY_TMPDIR=tempfile.mkdtemp(prefix="tfray-"))
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run([sys.executable, "-c", NODE_LOSS, str(out)], env=env, timeout=1200, cwd=ROOT, check=False,
                          capture_output=True, text=True)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-6000:])  # shown in CI's summary
    results = json.loads(out.read_text())
    for name in ("xgboost", "lightgbm"):
        result = results[name]
        assert len(result["removed"]) == 1 and result["alive"] == 3, (name, result)  # head + two nodes left
        # resumed from round 20, every round once, as good as the uninterrupted fit
        assert result["rounds"] == 40 and result["history"] == 40, (name, result)
        assert result["rmse"] <= 1.001 * result["whole_rmse"], (name, result)
    # the pool and LightGBM's rendezvous were on the head node when the node went
    assert results["helpers_on_head"] == {"_Pool": [True], "_Rendezvous": [True]}, results
    torch = results["pytorch"]
    assert len(torch["removed"]) == 1 and torch["alive"] == 3, torch
    assert torch["history"] == [1, 2, 3, 4, 5, 6] and torch["last_epoch"] == 6, torch  # each epoch once
    # rank 0 trained epochs 1-3 on the node taken away, then resumed after a checkpointed epoch elsewhere
    lost, *_ = torch["removed"]
    before = [int(e) for node, e in torch["rank0"] if node == lost]
    after = [int(e) for node, e in torch["rank0"] if node != lost]
    assert before == [1, 2, 3] and after[0] in (3, 4) and after == list(range(after[0], 7)), torch
