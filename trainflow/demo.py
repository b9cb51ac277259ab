"""`make demo` before the pipeline: train the demo credit model with XGBEstimator and print metrics."""
from __future__ import annotations

import time

import numpy as np

from trainflow.data import DataConnector, connect
from trainflow.distributors.xgboost import XGBEstimator


def main() -> None:
    session = connect("data/warehouse.duckdb")
    train = DataConnector.from_dataframe(session.table("TRAINING_DATA"))
    evaluation = DataConnector.from_dataframe(session.table("EVAL_DATA"))
    estimator = XGBEstimator(params={"objective": "reg:squarederror", "max_depth": 6, "learning_rate": 0.1})
    start = time.perf_counter()
    estimator.fit(train, input_cols=["age", "income", "credit_score"], label_col="default_risk",
                  eval_set=evaluation, verbose_eval=10)
    took = time.perf_counter() - start
    truth = evaluation.to_pandas()["default_risk"].to_numpy()
    pred = estimator.predict(evaluation)
    rmse = float(np.sqrt(np.mean((pred - truth) ** 2)))
    print(f"fit: {took:.1f}s on {estimator.placement_}; eval rmse {rmse:.5f}")


if __name__ == "__main__":
    main()
