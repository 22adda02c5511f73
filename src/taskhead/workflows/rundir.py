"""The run directory: the contract between training and everything after it.

```
RUN/model/  RUN/taskhead.json  RUN/config.yaml  RUN/metrics.json  RUN/README.md  RUN/checkpoints/
```
Every file is written to a temporary name and renamed. ``taskhead.json`` is written last, so a directory
without it is an unfinished run and is never loaded.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taskhead.errors import RunDirError
from taskhead.workflows.files import TEMP
from taskhead.workflows.outputs import LEGACY_TEMP, Kind, killed_stagings, warn_leftovers

if TYPE_CHECKING:
    from taskhead.config import RunConfig

META_FILE = "taskhead.json"


FORMAT_VERSION = 1
CHECKPOINTS = "checkpoints"  # RUN/checkpoints: the Trainer's checkpoints, for --resume


MANIFEST = "files"  # taskhead.json's list of the files taskhead wrote under model/ and scratch/


CHECKPOINT_NAME = re.compile(r"^checkpoint-\d+(\.incomplete)?$")


EXPORT_NAMES = ("export.json", "model.onnx", "model.int8.onnx")


def written_files(run_dir: Path) -> list[str]:
    """The files under ``model/`` and ``scratch/`` (paths relative to ``run_dir``): the manifest
    ``taskhead.json`` records, so that a later ``--overwrite`` can tell a file the user added there."""
    return sorted(
        str(p.relative_to(run_dir))
        for sub in ("model", "scratch")
        for p in (run_dir / sub).rglob("*")
        if p.is_file() or p.is_symlink()
    )


def _run_inside(folder: Path) -> list[str]:
    """Files in a run's sub-folders that taskhead did not write: in ``model/`` and ``scratch/``, those not in
    the manifest of ``taskhead.json`` (runs written before it was recorded are not checked there); in
    ``checkpoints/``, anything but ``checkpoint-N`` folders; in ``onnx/``, anything but an export's files."""
    foreign: list[str] = []
    try:
        listed = json.loads((folder / META_FILE).read_text(encoding="utf-8")).get(MANIFEST)
    except (OSError, ValueError, AttributeError):
        listed = None
    if isinstance(listed, list):
        known = set(listed)
        for sub in ("model", "scratch"):
            for p in sorted((folder / sub).rglob("*")) if (folder / sub).is_dir() else []:
                name = str(p.relative_to(folder))
                if (p.is_file() or p.is_symlink()) and name not in known and not TEMP.match(p.name):
                    foreign.append(name)
    for sub, ok in (("checkpoints", CHECKPOINT_NAME.match), ("onnx", lambda n: n in EXPORT_NAMES)):
        if (folder / sub).is_dir():
            foreign += [
                f"{sub}/{e.name}"
                for e in sorted((folder / sub).iterdir())
                if not ok(e.name) and not TEMP.match(e.name) and not LEGACY_TEMP.match(e.name)
            ]
    return foreign


RUN = Kind(
    "a taskhead run",
    (META_FILE, "checkpoints/checkpoint-*", "scratch/scratch.json"),
    (
        META_FILE,
        "model",
        "config.yaml",
        "metrics.json",
        "README.md",
        "checkpoints",
        "scratch",
        "onnx",
        "evaluate-*.json",
    ),
    _run_inside,
)


def read_meta(run_dir: Path) -> dict[str, Any]:
    """The run's ``taskhead.json``, after putting back a run an interrupted --overwrite left beside its path.

    Raises:
        RunDirError: no folder, an unfinished run, malformed JSON, a newer format.
    """
    killed = killed_stagings(run_dir)
    if not killed:
        warn_leftovers(run_dir)
    meta_path = run_dir / META_FILE
    resumable = " (training did not finish; resume it with taskhead train CONFIG --resume)"
    if not run_dir.is_dir():
        where = f"; a killed training left its checkpoints beside it{resumable}" if killed else ""
        raise RunDirError(f"{run_dir}: run directory not found{where}")
    if not meta_path.is_file():
        hint = resumable if (run_dir / "checkpoints").is_dir() or killed else ""
        raise RunDirError(f"{run_dir}: not a finished taskhead run: {META_FILE} is missing{hint}")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RunDirError(f"{meta_path}:{exc.lineno}: malformed JSON: {exc.msg}") from None
    except RecursionError:
        raise RunDirError(f"{meta_path}: malformed: JSON nested too deeply") from None
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise RunDirError(
            f"{meta_path}: written by a newer taskhead (format {meta['format_version']}); upgrade"
        )
    return meta


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("taskhead", "torch", "transformers", "accelerate", "tokenizers", "scikit-learn"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def save_config(config: RunConfig, path: Path) -> None:
    """The resolved configuration as YAML (``RUN/config.yaml``), written atomically."""
    import yaml

    from taskhead.workflows.files import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(config.to_yaml_dict(), sort_keys=False, allow_unicode=True))
