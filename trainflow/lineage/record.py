"""What a registered version records about where it came from: data, spec, code and run.

`DataRecord` is one split's data snapshot (where its rows came from and a digest of their values),
`RunLineage` everything the registry writes on the run and the version. Both are plain values: the
load step makes the data records, the register step the rest, the registry writes them, and
`trainflow lineage` / `trainflow reproduce` read them back (`trainflow.lineage.show`).
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import yaml

from trainflow.secrets import MASK, is_secret_name, mask_text

LINEAGE_FILE, SPEC_FILE = "lineage.json", "spec.yaml"


@dataclass(frozen=True)
class DataRecord:
    """One split as the run read it: the source's origin (files with size and mtime, or database
    and table/query), how rows were chosen from it, the row count and the content digest."""

    context: str  # "training" | "eval"
    source: dict[str, Any]
    selection: str
    rows: int
    digest: str
    columns: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "columns": list(self.columns)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DataRecord:
        return cls(d["context"], dict(d["source"]), d["selection"], int(d["rows"]), d["digest"],
                   tuple(d["columns"]))

    def differences(self, now: DataRecord) -> list[str]:
        """What changed from this record to `now`, in words; empty when the values are the same."""
        if (self.digest, self.rows, self.columns) == (now.digest, now.rows, now.columns):
            return []
        out = [f"{self.context} data digest {self.digest} -> {now.digest}"]
        if self.rows != now.rows:
            out.append(f"{self.context} rows {self.rows} -> {now.rows}")
        if self.columns != now.columns:
            out.append(f"{self.context} columns {list(self.columns)} -> {list(now.columns)}")
        before = {f["uri"]: f for f in self.source.get("files", [])}
        after = {f["uri"]: f for f in now.source.get("files", [])}
        out += [f"file {u} is gone" for u in before if u not in after]
        out += [f"file {u} is new" for u in after if u not in before]
        out += [f"file {u} changed (size {before[u]['size']} -> {after[u]['size']}, modified {after[u]['mtime']})"
                for u in before if u in after and before[u] != after[u]]
        for key in ("database", "table", "query"):
            if self.source.get(key) != now.source.get(key):
                out.append(f"{key} {self.source.get(key)!r} -> {now.source.get(key)!r}")
        return out


@dataclass(frozen=True)
class RunLineage:
    """Everything a version carries about its making (see `version_tags` for what the UI shows)."""

    spec_yaml: str  # `${env:...}` references kept, literal secrets masked
    spec_hash: str
    data: tuple[DataRecord, ...]
    validation_digest: str
    code: dict[str, str] = field(default_factory=dict)  # trainflow version, git commit
    flow_run: dict[str, str] = field(default_factory=dict)  # id, name, url, deployment
    reproduces: str = ""  # the version a `trainflow reproduce` run re-made

    def to_dict(self) -> dict[str, Any]:
        return {"spec_hash": self.spec_hash, "validation_digest": self.validation_digest, "code": self.code,
                "flow_run": self.flow_run, "reproduces": self.reproduces,
                "data": [d.to_dict() for d in self.data]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], spec_yaml: str = "") -> RunLineage:
        return cls(spec_yaml, d["spec_hash"], tuple(DataRecord.from_dict(x) for x in d["data"]),
                   d["validation_digest"], dict(d.get("code", {})), dict(d.get("flow_run", {})),
                   d.get("reproduces", ""))

    def tags(self) -> dict[str, str]:
        """Flat `trainflow.*` tags for the run and the model version (searchable in MLflow)."""
        out = {"trainflow.spec_hash": self.spec_hash, "trainflow.validation_digest": self.validation_digest,
               **{f"trainflow.code.{k}": v for k, v in self.code.items() if v},
               **{f"trainflow.flow_run.{k}": v for k, v in self.flow_run.items() if v}}
        for d in self.data:
            out[f"trainflow.data.{d.context}.digest"] = d.digest
            out[f"trainflow.data.{d.context}.rows"] = str(d.rows)
            out[f"trainflow.data.{d.context}.source"] = source_line(d.source)[:5000]
        if self.reproduces:
            out["trainflow.reproduces"] = self.reproduces
        return out

    def description(self, spec_name: str, metrics: Mapping[str, float]) -> str:
        """The model version's description: readable on its MLflow page."""
        lines = [f"Trained by trainflow job `{spec_name}` (spec {self.spec_hash[:12]}).", ""]
        if self.flow_run.get("id"):
            where = self.flow_run.get("url") or self.flow_run["id"]
            dep = f", deployment `{self.flow_run['deployment']}`" if self.flow_run.get("deployment") else ""
            lines.append(f"- Prefect flow run: {where}{dep}")
        lines += [f"- {d.context} data: {source_line(d.source)} ({d.selection}), {d.rows} rows, digest {d.digest}"
                  for d in self.data]
        if metrics:
            lines.append("- metrics: " + ", ".join(f"{k}={v:.6g}" for k, v in metrics.items()))
        code = self.code.get("git_commit") or self.code.get("trainflow", "")
        if code:
            lines.append(f"- code: trainflow {self.code.get('trainflow', '?')}"
                         + (f", commit {self.code['git_commit']}" if self.code.get("git_commit") else ""))
        return "\n".join(lines)[:5000]  # MLflow keeps 5000 characters of a version's description


@dataclass(frozen=True)
class Reproduction:
    """A rerun of a registered version: its URI and the data it must see again."""

    version: str  # models:/name/N
    data: tuple[DataRecord, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "data": [d.to_dict() for d in self.data]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Reproduction:
        return cls(d["version"], tuple(DataRecord.from_dict(x) for x in d["data"]))


def source_line(source: Mapping[str, Any]) -> str:
    """One line naming where a split's rows came from (for tags, descriptions and the CLI)."""
    kind = source.get("kind", "?")
    if kind == "parquet":
        return f"parquet {source.get('location')} ({len(source.get('files', []))} file(s))"
    if "database" in source:
        what = f"table {source['table']}" if source.get("table") else f"query {' '.join(str(source.get('query')).split())}"
        return f"{kind} {source['database']}: {what}"
    return str(source.get("description", kind))


def spec_text(spec: Any) -> str:
    """The spec as YAML a rerun can load: `${env:...}` references stay references, literal secrets
    (secret-named keys, URI passwords) become ***."""
    data = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    return yaml.safe_dump(_masked(data), sort_keys=False, width=110)


def spec_hash(text: str) -> str:
    """sha256 of the spec's canonical form: key order and YAML layout do not change it."""
    canonical = json.dumps(yaml.safe_load(text), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def report_digest(schema: Any, report: list[dict[str, Any]], rows: Mapping[str, int]) -> str:
    """sha256 of the checks that ran (the spec's schema section) and what they found."""
    payload = json.dumps({"schema": schema, "report": report, "rows": dict(rows)}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def _masked(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _masked(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v, key) for v in value]
    if isinstance(value, str):
        if is_secret_name(key) and not value.startswith("${env:"):
            return MASK
        return mask_text(value)
    return value


@functools.cache
def code_version() -> dict[str, str]:
    """trainflow's version and, when it runs from a git checkout, the commit (with `-dirty`)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        out = {"trainflow": version("trainflow")}
    except PackageNotFoundError:
        out = {"trainflow": "unknown"}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        commit = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
        out["git_commit"] = commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass  # not a checkout (an installed wheel): the version says it
    return out
