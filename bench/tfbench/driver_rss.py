"""(g) Driver memory of one XGBEstimator.fit, in a fresh process (VmHWM is per process, so the
benchmark's own driver, which also loads holdouts, cannot be used). Prints one JSON line.

  python -m tfbench.driver_rss --meta META.json --rounds 10
"""
from __future__ import annotations

import argparse
import json
import time

from tfbench.probes import proc_status


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--meta", required=True)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--depth", type=int, default=6)
    args = ap.parse_args()
    with open(args.meta) as fh:
        meta = json.load(fh)

    from trainflow.cluster import ensure_cluster
    from trainflow.data import DataConnector
    from trainflow.distributors.xgboost import XGBEstimator

    ensure_cluster()
    before = proc_status()
    est = XGBEstimator(n_estimators=args.rounds, params={"max_depth": args.depth, "eta": 0.1, "max_bin": 256})
    t0 = time.time()
    est.fit(DataConnector.from_parquet(meta["train"]), meta["feature_names"], meta["label"])
    wall = time.time() - t0
    after = proc_status()
    print(json.dumps({"rows": meta["rows"], "rss_before_fit": before["VmRSS"], "peak_rss": after["VmHWM"],
                      "rss_after_fit": after["VmRSS"], "fit_s": wall}), flush=True)


if __name__ == "__main__":
    main()
