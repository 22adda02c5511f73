"""Which Trainer checkpoint a ``--resume`` can trust after a crash.

The Trainer writes a checkpoint folder file by file (weights, optimizer, scheduler, RNG states) and its
``trainer_state.json`` last, then deletes checkpoints beyond ``save_total_limit``. A process killed part
way leaves a folder without ``trainer_state.json`` (being written) or without its weights (being
deleted). The newest folder that has a readable state and all its files is the one to resume from; the
incomplete ones are moved out of the way so that nothing later picks them up.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

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
