"""Shared fixtures: one real local Ray cluster (2 CPUs, loopback) for the whole session."""
from __future__ import annotations

import os
import shutil
import tempfile

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# Never the user's real trainflow home (its local Prefect server, state, attachments): a fresh one per
# session, whose server is stopped at the end; one a test leaks stops itself after 5 idle minutes.
os.environ["TRAINFLOW_HOME"] = tempfile.mkdtemp(prefix="trainflow-home-")
os.environ["TRAINFLOW_SERVER_IDLE_MINUTES"] = "5"

import numpy as np
import pandas as pd
import pytest


@pytest.fixture(scope="session", autouse=True)
def trainflow_home():
    """The session's TRAINFLOW_HOME; its local Prefect server (if a test started one) ends with it."""
    home = os.environ["TRAINFLOW_HOME"]
    yield home
    from trainflow import prefect_server

    os.environ["TRAINFLOW_HOME"] = home  # a test may have pointed it elsewhere
    prefect_server.stop()
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_cluster():
    import ray

    from trainflow.cluster import ensure_cluster

    os.environ.pop("RAY_ADDRESS", None)
    ensure_cluster(num_cpus=2)
    yield ray
    # left running for the session; ray's atexit hook stops what this process started


@pytest.fixture(scope="session")
def two_worker_fits(ray_cluster):
    """`two_worker_fits(case)`: the case's 2-worker fit (tests/boosting_cases.py), made once a session
    and shared by the contract suite and the framework's own tests."""
    from tests.boosting_cases import two_worker_fit

    done: dict = {}

    def get(case):
        if case.name not in done:
            done[case.name] = two_worker_fit(case)
        return done[case.name]

    return get


@pytest.fixture(scope="session")
def prefect_api():
    """One Prefect test server for the session's in-process flow runs (pipeline and scoring tests)."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield PREFECT_API_URL.value()


@pytest.fixture(scope="session")
def warehouse(tmp_path_factory):
    """The demo warehouse (smaller tables) in a tmp dir."""
    from trainflow.data.demo import build_warehouse

    return build_warehouse(tmp_path_factory.mktemp("wh") / "warehouse.duckdb", train_rows=4000, eval_rows=1000)


def regression_frame(rows: int, seed: int = 0, features: int = 4) -> pd.DataFrame:
    """y depends non-linearly on every feature, so a model that missed rows or columns shows it."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, size=(rows, features))
    y = np.sin(x[:, 0]) * 2 + x[:, 1] ** 2 + 0.5 * x[:, 2] * (x[:, 3] if features > 3 else 1)
    y = y + rng.normal(0, 0.1, rows)
    df = pd.DataFrame(x, columns=[f"f{i}" for i in range(features)])
    df["y"] = y
    return df


def early_stopping_frame(rows: int, seed: int) -> pd.DataFrame:
    """Integer-valued features (few distinct values: every worker count finds the same exact bins)
    and noisy labels, so a fast learner's eval metric turns up after a few rounds."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 40, size=(rows, 4)).astype(np.float64)
    y = np.sin(x[:, 0] / 6) + (x[:, 1] > 20) + rng.normal(0, 1.0, rows)
    df = pd.DataFrame(x, columns=[f"f{i}" for i in range(4)])
    df["y"] = y
    return df


def fit_within(seconds: float, fit, *args, **kwargs):
    """`fit(*args, **kwargs)` in a daemon thread; a fit still running after `seconds` fails the test
    (a hang in a native allreduce cannot be interrupted any other way)."""
    import threading

    out: dict = {}

    def run():
        try:
            out["value"] = fit(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"the fit did not finish within {seconds:g}s (hung?)"
    if "error" in out:
        raise out["error"]
    return out["value"]
