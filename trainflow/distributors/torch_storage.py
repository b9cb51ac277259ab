"""Where PyTorchDistributor keeps artifacts: a local folder or any URI pyarrow (or fsspec) can open.

Models go to `<location>/model/<request_id>`, Ray Train checkpoints to
`<location>/checkpoints/<request_id>`; on a multi-node cluster the location must be shared storage.
"""
from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from typing import Any

from trainflow.errors import ConfigError
from trainflow.secrets import mask_text

DEFAULT_ARTIFACT_LOCATION = os.path.join(".trainflow", "artifacts")


@dataclass(frozen=True)
class Location:
    """An artifact location: a pyarrow filesystem, the path inside it, and how to show it to users."""

    fs: Any
    path: str
    display: str

    def child(self, *parts: str) -> Location:
        sep = "/"
        path = sep.join([self.path.rstrip(sep), *parts])
        display = sep.join([self.display.rstrip(sep), *parts]) if "://" in self.display else \
            os.path.join(self.display, *parts)
        return Location(self.fs, path, display)

    def __str__(self) -> str:
        return mask_text(self.display)


ARTIFACTS_ENV = "TRAINFLOW_ARTIFACTS"
# Snowflake stage names: DB.SCHEMA.STAGE, @DB.SCHEMA.STAGE/path, @STAGE, @~/path (user stage)
_STAGE = re.compile(r"^(@~|@?[A-Za-z_][\w$]*(\.[A-Za-z_][\w$]*){0,2})(/.*)?$")


def artifact_root() -> str:
    """Where PyTorch artifacts and stage names land: TRAINFLOW_ARTIFACTS, else .trainflow/artifacts."""
    return os.environ.get(ARTIFACTS_ENV) or DEFAULT_ARTIFACT_LOCATION


def stage_location(location: str) -> str | None:
    """Where a Snowflake stage name lands: `$TRAINFLOW_ARTIFACTS/stages/<DB>/<SCHEMA>/<STAGE>/<path>`
    (default root .trainflow/artifacts); None for anything that is not a stage name (a path, a URI).
    Unquoted stage names are case-insensitive in Snowflake, so they are upper-cased."""
    text = location.strip()
    match = _STAGE.match(text)
    is_stage = match is not None and (text.startswith("@") or text.count(".") == 2 and "/" not in text.split(".")[0])
    if not is_stage or os.path.exists(text):
        return None
    name, rest = match.group(1).lstrip("@"), (match.group(3) or "").strip("/")
    parts = ["~user"] if name == "~" else [p.upper() for p in name.split(".")]
    root = artifact_root()
    return "/".join([root.rstrip("/"), "stages", *parts, *([rest] if rest else [])])


def resolve_location(location: str | os.PathLike | None) -> Location:
    """A local path (made absolute) or a URI via pyarrow.fs, falling back to fsspec; a Snowflake stage
    name maps under the configured artifact root (see stage_location)."""
    import pyarrow.fs as pafs

    if location is None:
        location = DEFAULT_ARTIFACT_LOCATION
    location = os.fspath(location)
    if isinstance(location, str) and (mapped := stage_location(location)) is not None:
        location = mapped
    if not isinstance(location, str) or not location.strip():
        raise ConfigError(f"artifact_stage_location={mask_text(str(location))!r} is invalid: use a path or a URI.")
    if "://" not in location:
        path = os.path.abspath(os.path.expanduser(location))
        return Location(pafs.LocalFileSystem(), path, path)
    try:
        fs, path = pafs.FileSystem.from_uri(location)
        return Location(fs, path, location.rstrip("/"))
    except (pa_errors() + (ValueError,)) as exc:
        try:
            import fsspec

            fsspec_fs, path = fsspec.core.url_to_fs(location)
        except Exception as exc2:  # noqa: BLE001 - unknown scheme / missing driver
            raise ConfigError(
                f"artifact_stage_location={mask_text(location)!r} cannot be opened ({mask_text(str(exc))}; "
                f"fsspec: {mask_text(str(exc2))}). Use a "
                "local path or a URI pyarrow or an installed fsspec driver understands (s3://, gs://, file://)."
            ) from None
        return Location(pafs.PyFileSystem(pafs.FSSpecHandler(fsspec_fs)), path, location.rstrip("/"))


def pa_errors() -> tuple[type[BaseException], ...]:
    import pyarrow as pa

    return (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError)


def copy_tree(src: Location, dst: Location) -> None:
    import pyarrow.fs as pafs

    dst.fs.create_dir(dst.path, recursive=True)
    infos = src.fs.get_file_info(pafs.FileSelector(src.path, recursive=True))
    for info in infos:
        rel = info.path[len(src.path.rstrip("/")) + 1:]
        target = f"{dst.path.rstrip('/')}/{rel}"
        if info.type == pafs.FileType.Directory:
            dst.fs.create_dir(target, recursive=True)
        elif info.type == pafs.FileType.File:
            pafs.copy_files(info.path, target, source_filesystem=src.fs, destination_filesystem=dst.fs)


def download_dir(location: str, local_dir: str | None = None) -> str:
    """Copy a model/checkpoint folder (path or URI) to a local folder; returns the local folder."""
    import pyarrow.fs as pafs

    src = resolve_location(location)
    if src.fs.get_file_info(src.path).type != pafs.FileType.Directory:
        raise ConfigError(f"{mask_text(location)!r} is not a folder (expected a model folder from PyTorchDistributor).")
    local = local_dir or tempfile.mkdtemp(prefix="trainflow-model-")
    copy_tree(src, Location(pafs.LocalFileSystem(), os.path.abspath(local), os.path.abspath(local)))
    return local
