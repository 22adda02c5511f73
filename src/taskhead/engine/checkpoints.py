"""Which Trainer checkpoint a ``--resume`` can trust after a crash, and what a failed save says.

The Trainer writes a checkpoint folder file by file (weights, optimizer, scheduler, RNG states) and its
``trainer_state.json`` last, then deletes checkpoints beyond ``save_total_limit``. A process killed part
way leaves a folder without ``trainer_state.json`` (being written) or without its weights (being
deleted). The newest folder that has a readable state and all its files is the one to resume from; the
incomplete ones are moved out of the way so that nothing later picks them up.

A save that fails for a file-system reason (a full disk, a quota, permissions) is recognised through the
serializers' own exception types (``write_failure``), the partial write is removed, and the user gets one
line with the path, the cause and the next step (``save_error``). ``folder_bytes``/``human_bytes`` measure
``checkpoints/`` against ``model/`` for the end-of-training summary.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

STATE = "trainer_state.json"
PATTERN = re.compile(r"^checkpoint-(\d+)$")


def checkpoints(folder: Path) -> list[Path]:
    """Checkpoint folders, newest (highest step) first."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := PATTERN.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def is_complete(checkpoint: Path) -> bool:
    """A readable trainer state, weights, and the optimizer and scheduler the state says were saved."""
    try:
        json.loads((checkpoint / STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    has_weights = any(checkpoint.glob("*.safetensors"))
    optimizer = (checkpoint / "optimizer.pt").is_file() and (checkpoint / "scheduler.pt").is_file()
    return has_weights and optimizer


def last_complete(folder: Path) -> Path | None:
    """The newest complete checkpoint in ``folder``; incomplete newer ones are renamed ``*.incomplete``."""
    for checkpoint in checkpoints(folder):
        if is_complete(checkpoint):
            return checkpoint
        target = checkpoint.with_name(checkpoint.name + ".incomplete")
        shutil.rmtree(target, ignore_errors=True)
        checkpoint.rename(target)
    return None


# File-system causes of a failed save, with what to do about each.
CAUSES = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large for the file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
}
SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
OS_ERROR = re.compile(r"os error (\d+)")  # safetensors' Rust I/O errors: "... (os error 28)"
# torch.save's stream writer reports a failed write without its errno
TORCH_WRITER = ("PytorchStreamWriter", "unexpected pos", "iostream error", "file write failed")
LOW_SPACE = 16 * 2**20  # bytes: a failed torch write on a disk with less free space than this is a full disk


def write_failure(exc: BaseException, folder: Path) -> tuple[str, int | None] | None:
    """Why writing into ``folder`` failed, when the file system is the cause: ``(cause, errno)``, e.g.
    ``("no space left on device", errno.ENOSPC)``; None for any other error.

    Serializers hide the ``OSError``: safetensors raises ``SafetensorError("... (os error 28)")`` and
    ``torch.save`` a ``RuntimeError`` from its stream writer with no errno at all; for the latter the free
    space left on ``folder``'s file system decides (errno None where it does not explain the failure).
    """
    seen: set[int] = set()
    chain: list[BaseException] = []
    item: BaseException | None = exc
    while item is not None and id(item) not in seen:
        seen.add(id(item))
        chain.append(item)
        item = item.__cause__ or item.__context__
    for item in chain:
        code = item.errno if isinstance(item, OSError) else None
        found = OS_ERROR.search(str(item)) if code is None else None
        code = int(found.group(1)) if found else code
        if code in CAUSES:
            return CAUSES[code], code
    if any(marker in str(item) for item in chain for marker in TORCH_WRITER):
        if free_bytes(folder) < LOW_SPACE:
            return CAUSES[errno.ENOSPC], errno.ENOSPC
        return f"write failed ({str(exc).strip().splitlines()[0][:200]})", None
    return None


def free_bytes(folder: Path) -> int:
    """Bytes free to this user on the file system that holds ``folder`` (or its nearest existing parent)."""
    here = folder.absolute()
    while not here.exists() and here != here.parent:
        here = here.parent
    try:
        return shutil.disk_usage(here).free
    except OSError:
        return 0


def folder_bytes(folder: Path) -> int:
    """Total size in bytes of the files under ``folder`` (0 where it does not exist); links not followed."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:  # removed while we walk (checkpoint rotation)
                continue
    return total


def human_bytes(size: int) -> str:
    """``1234567`` -> ``"1.2 MB"`` (decimal units, as disks are sold and ``df -H`` shows)."""
    value, unit = float(size), "B"
    for larger in ("kB", "MB", "GB", "TB"):
        if value < 1000:
            break
        value, unit = value / 1000, larger
    return f"{value:.0f} {unit}" if unit == "B" or value >= 100 else f"{value:.1f} {unit}"


def remove_partial(path: Path) -> bool:
    """Remove a partly written file or folder; True when nothing is left at ``path``."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
    return not os.path.lexists(path)


def save_error(
    path: Path, cause: tuple[str, int | None], *, what: str, removed: bool, checkpoints: Path, command: str
) -> str:
    """The one-line message for a save that failed: the path, the cause, what was cleaned up, what to do.

    Args:
        path: the checkpoint folder or file being written.
        cause: ``write_failure``'s answer.
        what: ``"a checkpoint"`` or ``"the run directory"``.
        removed: whether the partial write was removed.
        checkpoints: the run's ``checkpoints/`` folder (its size is part of the advice on space; where it
            holds a complete checkpoint the next step is ``--resume``, else ``--overwrite``).
        command: the command that trained the run, e.g. ``taskhead train run.yaml``.
    """
    text, code = cause
    folder = path.parent if what == "a checkpoint" else path
    done = "removed the partial write" if removed else f"could not remove the partial write at {path}"
    if newest_complete(checkpoints) is not None:
        then = f"then resume with {command} --resume"
    else:
        then = f"then train again with {command} --overwrite"
    if code in SPACE:
        held = folder_bytes(checkpoints)
        room = f"free space (checkpoints/ holds {human_bytes(held)})" if held else "free space"
        if what == "a checkpoint":
            room += " or lower train.save_total_limit"
        advice = f"{room}, {then}"
    elif code is not None:
        advice = f"make {folder} writable (or choose another output_dir), {then}"
    else:
        advice = f"check the disk that holds {folder}, {then}"
    return f"{path}: {text} while saving {what}; {done}; {advice}"


def newest_complete(folder: Path) -> Path | None:
    """The newest complete checkpoint in ``folder``, touching nothing (``last_complete`` renames)."""
    return next((c for c in checkpoints(folder) if is_complete(c)), None)


@contextmanager
def explained_save_errors(run_dir: Path, *, command: str) -> Iterator[None]:
    """Around the writing of the run directory: a file-system failure (``write_failure``) removes the
    temporary files and folders it left in ``run_dir`` (names starting with ``.`` that were not there
    before) and raises ``SaveError`` naming ``run_dir``, the cause and the next step (``command``, the
    command that trained the run, with ``--resume`` where a complete checkpoint is left); other errors
    pass."""
    from taskhead.errors import SaveError

    before = set(os.listdir(run_dir)) if run_dir.is_dir() else set()
    try:
        yield
    except Exception as exc:
        cause = write_failure(exc, run_dir)
        if cause is None:
            raise
        left = [run_dir / n for n in os.listdir(run_dir) if n.startswith(".") and n not in before]
        removed = all([remove_partial(p) for p in left])
        folder = run_dir / "checkpoints"
        message = save_error(
            run_dir, cause, what="the run directory", removed=removed, checkpoints=folder, command=command
        )
        raise SaveError(message) from exc


def disk_usage(run_dir: Path) -> dict[str, Any]:
    """Bytes held by ``model/`` and by ``checkpoints/``, and how many checkpoints the latter keeps."""
    folder = run_dir / "checkpoints"
    return {
        "model_bytes": folder_bytes(run_dir / "model"),
        "checkpoints_bytes": folder_bytes(folder),
        "checkpoints": len(checkpoints(folder)),
    }


def disk_usage_text(usage: dict[str, Any]) -> str:
    """``disk_usage`` as one line of the end-of-training summary."""
    model = f"model/ {human_bytes(usage['model_bytes'])}"
    if not usage["checkpoints_bytes"]:
        return f"{model}; no checkpoints kept"
    n = usage["checkpoints"]
    return (
        f"checkpoints/ {human_bytes(usage['checkpoints_bytes'])} ({n} checkpoint{'' if n == 1 else 's'}) "
        f"vs {model}; delete checkpoints/ when you no longer need --resume"
    )
