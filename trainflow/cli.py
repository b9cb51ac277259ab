"""`trainflow` command line: run / validate a job spec, trace and rerun a registered version
(lineage / reproduce), manage the local Prefect server.

The composition root: the only library module that reaches the Prefect flows.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from trainflow.errors import ConfigError, TrainflowError

EXIT_ERROR, EXIT_USAGE = 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trainflow", description="Distributed training pipelines on Ray, "
                                     "orchestrated by Prefect, registered in MLflow.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text, spec_help, example in (
            ("run", "run the whole pipeline once", "job spec YAML file", "trainer.n_estimators=200"),
            ("validate", "only load and validate the data", "job spec YAML file", "trainer.n_estimators=200"),
            ("score", "run a batch-scoring job: a registered model scores a source into a sink",
             "scoring spec YAML file (model, source, sink, carry)", "model=models:/credit-risk/3")):
        cmd = _command(sub, name, text, "end with one JSON line of the result")
        cmd.add_argument("spec", help=spec_help)
        cmd.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                         help=f"override a spec value, e.g. --set {example}")
    for name, text, shown in (
            ("lineage", "where a registered version came from: flow run, spec, data, code", "print one JSON object"),
            ("reproduce", ("rerun a version's stored spec on the same data, placement and threads; refuses "
                           "when the data changed"), "end with one JSON line of the result")):
        _command(sub, name, text, shown).add_argument("model", help="models:/NAME/VERSION or models:/NAME@ALIAS")
    serve = sub.add_parser("serve", help="serve one deployment per job spec, with its schedule")
    serve.add_argument("paths", nargs="*", help="spec files or folders (default deployments/specs)")
    serve.add_argument("--limit", type=int, default=None, help="most flow runs at once")
    deps = sub.add_parser("deployments", help="render deployments/prefect.yaml from the job specs")
    deps.add_argument("paths", nargs="*", help="spec files or folders (default deployments/specs)")
    deps.add_argument("--write", action="store_true", help="write deployments/prefect.yaml")
    server = sub.add_parser("server", help="the local Prefect server (used when PREFECT_API_URL is unset): "
                            "start keeps it up until stop; status shows what runs")
    server.add_argument("action", choices=["start", "stop", "status"])
    server.add_argument("--json", action="store_true", help="status as one JSON line")
    return parser


def _command(sub, name: str, text: str, json_help: str) -> argparse.ArgumentParser:
    cmd = sub.add_parser(name, help=text)
    cmd.add_argument("--json", action="store_true", help=json_help)
    cmd.add_argument("--debug", action="store_true", help="show tracebacks")
    return cmd


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        commands = {"run": _run, "validate": _validate, "serve": _serve, "deployments": _deployments,
                    "server": _server, "lineage": _lineage, "reproduce": _reproduce, "score": _score}
        return commands[args.command](args)
    except TrainflowError as exc:
        if args.debug:
            raise
        from trainflow.spec import SpecError

        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, SpecError) else EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # an error trainflow did not anticipate: short, with the way to see more
        if args.debug:
            raise
        print(f"error: unexpected {type(exc).__name__}: {exc}. Re-run with --debug for the traceback.",
              file=sys.stderr)
        return EXIT_ERROR


def _run(args: argparse.Namespace) -> int:
    from trainflow import prefect_server
    from trainflow.spec import load_spec

    spec = load_spec(args.spec, args.overrides)
    _ship_with(spec)
    # Before Prefect or Ray start, so Ray workers inherit PREFECT_API_URL; attached while it runs.
    with prefect_server.attach("run") as api:
        return _run_attached(args, spec, api)


def _score(args: argparse.Namespace) -> int:
    from trainflow import prefect_server
    from trainflow.spec import ScoreSpec, load_spec

    spec = load_spec(args.spec, args.overrides, model=ScoreSpec)
    with prefect_server.attach("run") as api:
        from flows.scoring import scoring_pipeline

        start = time.perf_counter()
        result = _flow_result(args, api, scoring_pipeline, spec)
    result["seconds"] = round(time.perf_counter() - start, 1)
    print()
    print(f"Scored {result['rows']} rows with {result['model']} into {result['sink']}")
    print(f"  run id:    {result['run_id']}  ({result['parts']} part(s); a rerun of this run id replaces them)")
    print(f"  MLflow:    run {result['mlflow_run_id']} in experiment {spec.name!r}")
    print(f"  took:      {result['seconds']}s")
    if args.json:
        print(json.dumps(result, default=str))
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    from trainflow import prefect_server
    from trainflow.lineage.store import reproduction
    from trainflow.registry import tracking_uri

    spec, target, overrides = reproduction(args.model, tracking_uri())
    _ship_with(spec)
    print(f"Reproducing {target.version} with the stored spec" + (f" and {' '.join(overrides)}" if overrides else ""))
    with prefect_server.attach("run") as api:
        return _run_attached(args, spec, api, target.to_dict())


def _lineage(args: argparse.Namespace) -> int:
    from trainflow.lineage.record import source_line
    from trainflow.lineage.store import read_lineage
    from trainflow.registry import tracking_uri

    found = read_lineage(args.model, tracking_uri())
    if args.json:
        print(json.dumps(found.to_dict(), default=str))
        return 0
    lin = found.lineage
    print(f"{found.uri}  aliases: {', '.join(found.aliases) or '-'}")
    print(f"  run:       {found.run_id} in experiment {found.experiment!r} ({found.status})")
    flow = lin.flow_run
    if flow.get("id"):
        print(f"  flow run:  {flow.get('name', '')} {flow['id']}" + (f"  {flow['url']}" if flow.get("url") else "")
              + (f"  deployment {flow['deployment']}" if flow.get("deployment") else ""))
    print(f"  spec:      sha256 {lin.spec_hash}  (artifact spec.yaml)")
    code = lin.code
    print(f"  code:      trainflow {code.get('trainflow', '?')}"
          + (f", commit {code['git_commit']}" if code.get("git_commit") else ""))
    print(f"  checks:    pandera report digest {lin.validation_digest[:16]}")
    for d in lin.data:
        print(f"  {d.context + ':':<10} {d.rows} rows, digest {d.digest}, {d.selection}")
        print(f"             {source_line(d.source)}")
        for f in d.source.get("files", []):
            print(f"             {f['uri']}  {f['size']} bytes  modified {f['mtime']}")
    if found.metrics:
        print("  metrics:   " + "  ".join(f"{k}={v:.6g}" for k, v in sorted(found.metrics.items())
                                          if not k.startswith(("train-", "eval-"))))
    if lin.reproduces:
        print(f"  reproduces {lin.reproduces}")
    print(f"Rerun it:    trainflow reproduce {found.uri}")
    return 0


def _ship_with(spec) -> None:
    """On an existing cluster, the modules this spec names travel with trainflow's code."""
    from trainflow.cluster.runtime_env import ship_modules, spec_modules

    ship_modules(spec_modules(spec))


def _run_attached(args: argparse.Namespace, spec, api: str, reproduce: dict[str, Any] | None = None) -> int:
    from flows.pipeline import training_pipeline
    from trainflow.registry import get_champion, tracking_uri
    from trainflow.secrets import mask_text

    start = time.perf_counter()
    result = _flow_result(args, api, training_pipeline, spec, reproduce)
    champion = get_champion(spec.register.model_name)
    result.update(seconds=round(time.perf_counter() - start, 1), tracking_uri=mask_text(tracking_uri()),
                  prefect_api=mask_text(str(api)))
    if champion is not None:
        result["champion_metrics"] = {k: v for k, v in champion[1].items() if k in result["metrics"]}
    _print_result(result)
    if args.json:
        print(json.dumps(result, default=str))
    return 0


def _flow_result(args: argparse.Namespace, api: str, flow, *params: Any) -> dict[str, Any]:
    """Run `flow` in this process under the project tag; its result, or its error as trainflow's."""
    from prefect import tags

    from flows.console import show_errors_as_messages

    if not args.debug:
        show_errors_as_messages()
    with tags(project_tag()):
        state = flow(*params, return_state=True)
    if state.is_failed():
        exc = _exception_of(state)
        raise exc if isinstance(exc, TrainflowError) else TrainflowError(
            f"The flow run failed: {state.message}. Re-run with --debug or open the run in the Prefect UI ({api}).")
    return state.result()


def _exception_of(state) -> BaseException:
    try:
        state.result()
    except BaseException as exc:  # noqa: BLE001 - the flow's own failure, re-raised by Prefect
        return exc
    return TrainflowError(state.message or "flow run failed")


def _print_result(r: dict[str, Any]) -> None:
    metrics = "  ".join(f"{k}={v:.6g}" for k, v in r["metrics"].items())
    print()
    print(f"Registered {r['name']} version {r['version']}  aliases: {', '.join(r['aliases']) or '-'}")
    print(f"  model:     {r['uri']}")
    print(f"  metrics:   {metrics}")
    print(f"  champion:  {r['champion_uri']} (version {r['champion_version']})"
          + (f"  {'  '.join(f'{k}={v:.6g}' for k, v in r['champion_metrics'].items())}"
             if r.get("champion_metrics") else ""))
    if r.get("decision"):  # the comparison on this run's eval data, and whether champion moved
        print(f"  decision:  {r['decision']}")
    ui = r["prefect_api"].removesuffix("/api")
    print(f"  took:      {r['seconds']}s")
    print(f"MLflow UI:   mlflow ui --backend-store-uri {r['tracking_uri']} --host 127.0.0.1  (then http://127.0.0.1:5000)")
    print(f"Prefect UI:  {ui}  (`trainflow server status` shows when the local server stops by itself)")


def _validate(args: argparse.Namespace) -> int:
    from trainflow.pipeline.load import load
    from trainflow.spec import load_spec

    spec = load_spec(args.spec, args.overrides)
    _ship_with(spec)
    data = load(spec)  # raises SchemaValidationError with the report
    summary = {"valid": True, "train_rows": data.train_rows, "eval_rows": data.eval_rows,
               "eval_source": data.eval_source}
    print(f"{spec.name}: {data.train_rows} training rows and {data.eval_rows} eval rows "
          f"({data.eval_source}) pass every schema check.")
    if args.json:
        print(json.dumps(summary))
    return 0


def _serve(args: argparse.Namespace) -> int:
    """Serve the deployments in the foreground, attached to the local server; Ctrl-C stops serving."""
    import os

    from flows.console import SHORT_ERRORS_ENV
    from trainflow import prefect_server
    from trainflow.cluster import EMBEDDED_ENV, ensure_cluster

    if not args.debug:
        os.environ[SHORT_ERRORS_ENV] = "1"  # read by the flow-run processes that serve starts
    with prefect_server.attach("serve") as api:
        if not os.environ.get("RAY_ADDRESS"):
            import ray

            ensure_cluster()  # one embedded Ray for every served run, which connect to it as drivers
            os.environ["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address
            os.environ[EMBEDDED_ENV] = os.environ["RAY_ADDRESS"]  # served runs: nothing to ship or check
        from prefect import serve

        from flows.deployments import build, load_any, spec_paths
        from trainflow.cluster.runtime_env import SHIP_MODULES_ENV, spec_modules

        deployments = build(args.paths)
        # Served runs are new processes: on an existing cluster they ship the modules every spec names.
        named = {m for p in spec_paths(args.paths) for m in spec_modules(load_any(p))}
        named |= {m for m in os.environ.get(SHIP_MODULES_ENV, "").split(",") if m}
        if named:
            os.environ[SHIP_MODULES_ENV] = ",".join(sorted(named))
        _claim(deployments, project_tag())
        ui = api.removesuffix("/api")
        print(f"Serving {len(deployments)} deployment(s) of training-pipeline: "
              + ", ".join(d.name for d in deployments))
        print(f"Prefect UI: {ui}/deployments  (Ctrl-C stops serving)")
        serve(*deployments, limit=args.limit, print_starting_message=False)
    return 0


def project_tag() -> str:
    """The tag that tells projects apart on the shared server: `project:` + TRAINFLOW_PROJECT, else the
    working directory's name. Every flow run and every served deployment carries it."""
    import os
    from pathlib import Path

    return f"project:{os.environ.get('TRAINFLOW_PROJECT') or Path.cwd().name}"


def _claim(deployments: list, tag: str) -> None:
    """Tag the deployments with this project, refusing one that another project serves under the same
    name (Prefect keys a deployment by flow and name: serving it here would replace theirs)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        for d in deployments:
            try:
                existing = client.read_deployment_by_name(f"training-pipeline/{d.name}")
            except ObjectNotFound:
                existing = None
            owners = [t for t in (existing.tags if existing else []) if t.startswith("project:")]
            if owners and tag not in owners:
                raise ConfigError(
                    f"Deployment 'training-pipeline/{d.name}' belongs to {owners[0]} on this Prefect server, "
                    f"which all your projects share; this is {tag}. Rename the spec (its `name` is the "
                    f"deployment's name), or set TRAINFLOW_PROJECT={owners[0].removeprefix('project:')} "
                    "if both are the same project.")
            d.tags = [*d.tags, tag]


def _deployments(args: argparse.Namespace) -> int:
    from pathlib import Path

    from flows.deployments import prefect_yaml

    text = prefect_yaml(args.paths)
    if args.write:
        Path("deployments/prefect.yaml").write_text(text)
        print("wrote deployments/prefect.yaml")
    else:
        print(text, end="")
    return 0


def _server(args: argparse.Namespace) -> int:
    from trainflow import prefect_server

    if args.action == "start":
        print(f"Prefect API: {prefect_server.keep_running()}  (stays until `trainflow server stop`)")
    elif args.action == "stop":
        print("stopped" if prefect_server.stop() else "no local server was running")
    else:
        info = prefect_server.status()
        if args.json:
            print(json.dumps(info, default=str))
        else:
            _print_status(info)
    return 0


def _print_status(info: dict[str, Any]) -> None:
    if not info["running"]:
        print(f"Local Prefect server: not running  (home {info['home']})")
        return
    print(f"Local Prefect server: running, pid {info['pid']}, {info['ui_url']}  (API {info['api_url']})")
    print(f"  home:      {info['home']}  (state, SQLite under prefect/, log prefect-server.log)")
    print(f"  policy:    {info['policy']}")
    runs = "unknown" if info["active_runs"] is None else info["active_runs"]
    print(f"  flow runs: {runs} Running/Pending")
    for a in info["attached"] or [{}]:
        print(f"  attached:  {a.get('kind')} pid {a.get('pid')} in {a.get('cwd')}" if a else "  attached:  none")
    check = info.get("last_check") or {}
    watchdog = f"pid {info['watchdog_pid']}" if info["watchdog_alive"] else "not running"
    print(f"  watchdog:  {watchdog}; last check: {check.get('reason', 'none yet')}")


if __name__ == "__main__":
    sys.exit(main())
