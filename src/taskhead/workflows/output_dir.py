"""Where a training writes: the checks on ``output_dir`` before any model loads, the staging folder the run
is trained in (swapped in when complete), and the checkpoint ``--resume`` continues from."""

from __future__ import annotations

import os
from pathlib import Path

from taskhead.console import info
from taskhead.errors import RunDirError
from taskhead.workflows.files import real
from taskhead.workflows.outputs import Staging
from taskhead.workflows.rundir import CHECKPOINTS, META_FILE


def check_output_dir(run_dir: Path, *, resume: bool, overwrite: bool) -> tuple[Path | None, Staging | None]:
    """Check the run directory; returns the checkpoint to resume from and the staging folder the run is
    trained in: a locked folder beside ``run_dir``, swapped in when the run is complete, so that an old run
    stays loadable until then and a killed training leaves nothing at ``run_dir``. ``--resume`` continues the
    newest staging folder a killed training left (else, for runs trained in place, ``run_dir/checkpoints``).

    A folder holding files taskhead did not write is refused, even with ``--overwrite``. In a multi-process
    run only rank 0 cleans up; the others find the same checkpoint and share the staging folder.

    Raises:
        RunDirError: a folder that is not a taskhead run, a finished run or a killed training's checkpoints
            without --overwrite/--resume, --resume without a complete checkpoint, a folder that cannot be
            written, an --overwrite of the folder you are in.
    """
    from taskhead.console import process_rank
    from taskhead.workflows.outputs import check_replaceable, clean_leftovers, killed_stagings
    from taskhead.workflows.rundir import RUN

    rank = process_rank()
    killed = killed_stagings(run_dir, include_live=rank > 0)
    if rank == 0:
        removed = clean_leftovers(run_dir, keep=set() if overwrite else set(killed))
        if removed:
            names = ", ".join(p.name for p in removed)
            info(f"{run_dir}: removed what interrupted commands left beside it: {names}")
    finished = (run_dir / META_FILE).exists()
    checkpoints = run_dir / CHECKPOINTS
    if resume:
        return _resume_point(run_dir, killed, rank)
    check_replaceable(run_dir, RUN, "output_dir")
    if killed and not overwrite:
        raise RunDirError(
            f"{run_dir}: a killed training left its checkpoints beside it "
            f"({', '.join(p.name for p in killed.values())}); pass --resume to continue it, --overwrite to "
            f"discard it"
        )
    if (finished or checkpoints.exists()) and not overwrite:
        what = "a finished run" if finished else "checkpoints of an unfinished run"
        raise RunDirError(
            f"{run_dir}: already holds {what}; pass --overwrite to replace it, --resume to "
            f"continue it, or choose another output_dir"
        )
    here = Path.cwd().resolve()
    inside = here == real(run_dir) or real(run_dir) in here.parents
    try:
        if inside and run_dir.is_dir() and any(run_dir.iterdir()):
            raise RunDirError(
                f"output_dir {run_dir}: holds your current folder {here}; --overwrite swaps the whole "
                f"folder, so run it from outside (cd {real(run_dir).parent})"
            )
        if inside:  # an empty current folder: trained in place (swapping it would pull it from under you)
            probe = run_dir / f".write-test-{os.getpid()}"
            probe.write_text("ok")
            probe.unlink()
            return None, None
        return None, Staging(run_dir, _run_token())
    except OSError as exc:
        raise RunDirError(f"{run_dir}: output_dir is not writable ({exc.strerror})") from None


def _resume_point(run_dir: Path, killed: dict[str, Path], rank: int) -> tuple[Path, Staging | None]:
    """``--resume``: the newest complete checkpoint of the newest staging folder a killed training left
    (adopted: training goes on there and is swapped in at the end), else of ``run_dir/checkpoints``."""
    from taskhead.engine.checkpoints import last_complete

    find = last_complete if rank == 0 else _newest_complete  # rank 0 alone sets incomplete ones aside
    for token, folder in killed.items():
        staging = Staging(run_dir, token)
        last = find(folder / CHECKPOINTS)
        if last is not None:
            return last, staging
        staging.release()
    last = find(run_dir / CHECKPOINTS)
    if last is None:
        raise RunDirError(
            f"{run_dir}: --resume: no complete checkpoint in {run_dir / CHECKPOINTS} nor beside it; start "
            f"without --resume"
        )
    return last, None


def _run_token() -> str | None:
    """The staging folder's token: this process (None), or the run id of a distributed run's processes."""
    if _world_size() > 1:
        return os.environ.get("TORCHELASTIC_RUN_ID") or f"port{os.environ.get('MASTER_PORT', '0')}"
    return None


def _world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def _newest_complete(folder: Path) -> Path | None:
    from taskhead.engine.checkpoints import checkpoints, is_complete

    return next((c for c in checkpoints(folder) if is_complete(c)), None)
