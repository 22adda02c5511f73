"""Folders taskhead replaces (runs, indexes, exports): only its own (``check_replaceable``), swapped in
whole (``Staging``: a locked folder beside the target, exchanged with it in one step), one writer at a time
(``WriterLock``), and what killed writers left beside them cleaned (writers) or reported (readers).
Output files are checked against the command's inputs (``check_output_file``)."""

from __future__ import annotations

import errno
import fcntl
import fnmatch
import os
import re
import shutil
import sys
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taskhead.errors import RunDirError
from taskhead.workflows.files import (
    TEMP,
    alive,
    apply_umask,
    leftovers,
    real,
    remove_dead_leftovers,
    sibling,
)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where the OS or the file
    system lacks it (NFS, macOS, Windows, old kernels), for the caller's two-rename fallback."""
    if sys.platform != "linux":
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


class Staging:
    """A temporary folder beside ``target``, locked while this process works in it, swapped into place by
    ``commit()``. A kill at any instant leaves the old or the new folder at ``target``; what a kill leaves
    beside it is removed by the next writer of ``target`` (``clean_leftovers``) and, where ``target``
    itself is missing after a kill between the two renames of the fallback, put back by the next reader
    (``recover``).

    ``token`` names the folder: the process id, or a run id shared by the processes of one distributed run
    (they all hold the lock; only one commits).
    """

    def __init__(self, target: Path, token: str | None = None) -> None:
        self.target = target = real(target)
        self.token = token or str(os.getpid())
        self.path = sibling(target, "tmp", self.token)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            lock = sibling(target, "lock", self.token)
            self._lock = open(lock, "a")  # noqa: SIM115 - held until commit() or discard()
            fcntl.flock(self._lock, fcntl.LOCK_SH)
            self.path.mkdir(exist_ok=True)
        except OSError as exc:  # before any work: one line naming the folder (RunDirError, exit 2)
            raise RunDirError(
                f"{target}: cannot write beside it in {target.parent} ({exc.strerror})"
            ) from None

    def commit(self) -> None:
        """Put the filled folder at ``target``; the replaced one is removed."""
        apply_umask(self.path)
        if not self.target.exists() or is_empty_dir(self.target):
            if self.target.exists():
                self.target.rmdir()
            os.replace(self.path, self.target)
        elif _exchange(self.path, self.target):
            shutil.rmtree(self.path, ignore_errors=True)  # now the old folder
        else:  # two renames; recover() puts a complete one back if a kill falls between them
            new, old = sibling(self.target, "new", self.token), sibling(self.target, "old", self.token)
            os.replace(self.path, new)
            os.replace(self.target, old)
            os.replace(new, self.target)
            shutil.rmtree(old, ignore_errors=True)
        self.release()

    def discard(self) -> None:
        """Remove the folder (a failed or interrupted fill); ``target`` is untouched."""
        shutil.rmtree(self.path, ignore_errors=True)
        self.release()

    def release(self, keep: bool = False) -> None:
        """Let go of the lock without touching the folder (the other processes of a distributed run).
        ``keep``: the folder stays for ``--resume``; its lock file stays too, unlocked, which marks it as no
        live process's (even this one's, in a notebook that trains again)."""
        if not self._lock.closed:
            if not keep:
                Path(self._lock.name).unlink(missing_ok=True)
            self._lock.close()


def is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and not any(path.iterdir())


def replace_dir(target: Path, fill: Any) -> None:
    """Build a directory with ``fill(tmp_dir)`` beside ``target`` and swap it into place (see ``Staging``).

    Raises:
        whatever ``fill`` raises, after removing the temporary directory; OSError from the file system.
    """
    target = real(target)
    clean_leftovers(target)
    staging = Staging(target)
    try:
        fill(staging.path)
        staging.commit()
    except BaseException:
        staging.discard()
        raise


def recover(target: Path) -> None:
    """Where a kill fell between the two renames of the fallback swap, ``target`` is missing and the
    complete new (else the old) folder waits beside it: put it back. Every reader of a run, index or export
    calls it."""
    target = real(target)
    if target.exists():
        return
    for token, entries in leftovers(target).items():
        if alive(target, token, entries):
            continue
        for kind in ("new", "old"):
            candidate = sibling(target, kind, token)
            if candidate in entries:
                try:
                    os.replace(candidate, target)
                except OSError:
                    continue
                return


def clean_leftovers(target: Path, keep: Collection[str] = ()) -> list[Path]:
    """Put back a ``target`` lost between two renames (``recover``), then remove what killed writers left
    beside it: the folders and files no live process holds, except those of the tokens in ``keep``. Returns
    the removed paths (for a report)."""
    target = real(target)
    recover(target)
    return [
        p
        for p in remove_dead_leftovers(target, keep)
        if not p.name.endswith(".tmp") and not p.name.startswith(f".{target.name}.taskhead-lock-")
    ]


def killed_stagings(target: Path, include_live: bool = False) -> dict[str, Path]:
    """Staging folders beside ``target`` that no live process holds and that hold training checkpoints
    (a killed ``train``): token -> folder, newest first. ``--resume`` continues the newest; a plain train
    refuses to discard them; ``--overwrite`` removes them. ``include_live``: also those a live process holds
    (the other ranks of a distributed run, whose rank 0 has adopted one already)."""
    target = real(target)
    found = []
    for token, entries in leftovers(target).items():
        folder = sibling(target, "tmp", token)
        trained = folder in entries and any(p.is_dir() for p in (folder / "checkpoints").glob("checkpoint-*"))
        if trained and (include_live or not alive(target, token, entries)):
            found.append((folder.stat().st_mtime, token, folder))
    return {token: folder for _, token, folder in sorted(found, reverse=True)}


class WriterLock:
    """One writer per output path: an exclusive lock on ``.NAME.taskhead-lock-writer`` beside ``target``,
    held from the checks to the final swap, so that a second ``train`` into the same folder stops at once
    instead of replacing the first one's run. Released on ``release()`` or when the process ends (kill -9
    included: the lock is the kernel's).

    Raises:
        RunDirError: another process holds it.
    """

    def __init__(self, target: Path) -> None:
        target = real(target)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunDirError(f"{target}: output_dir is not writable ({exc.strerror})") from None
        self.path = sibling(target, "lock", "writer")
        try:
            self._fh = open(self.path, "a+")  # noqa: SIM115 - held until release()
        except OSError as exc:
            raise RunDirError(f"{target}: output_dir is not writable ({exc.strerror})") from None
        try:
            fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._fh.close()
            raise RunDirError(
                f"{target}: another taskhead command is writing it (it holds {self.path.name}); wait for it "
                f"to finish or choose another output_dir"
            ) from None

    def release(self) -> None:
        if not self._fh.closed:
            self.path.unlink(missing_ok=True)
            self._fh.close()


def report_leftovers(target: Path) -> list[Path]:
    """Readers do not delete: the leftovers beside ``target`` no live process holds, for a warning."""
    target = real(target)
    recover(target)
    return [
        p
        for token, entries in leftovers(target).items()
        if not alive(target, token, entries)
        for p in entries
        if not p.name.startswith(f".{target.name}.taskhead-lock-")
    ]


def warn_leftovers(target: Path) -> None:
    """Put back a ``target`` lost between two renames, and warn (once per path) of what killed writers left
    beside it; readers do not delete it, the next writer of ``target`` does."""
    left = report_leftovers(target)
    if left and target not in _WARNED:
        from taskhead.console import warn

        _WARNED.add(target)
        warn(
            f"{target}: an interrupted command left {', '.join(p.name for p in left)} beside it; the next "
            f"command that writes {target} removes it (or delete it yourself)"
        )


_WARNED: set[Path] = set()


@dataclass(frozen=True)
class Kind:
    """What a folder taskhead replaces holds: the file that marks a complete one, the names taskhead writes
    in it (shell patterns), and what to call it in messages."""

    what: str
    markers: tuple[str, ...]
    names: tuple[str, ...]
    inside: Callable[[Path], list[str]] | None = None  # what sub-folders hold that taskhead did not write


# names a run folder of earlier versions may hold: their temporary files and folders
LEGACY_TEMP = re.compile(
    r"^\.(?:(?:model|scratch|onnx)\.(?:[a-z0-9_]{8}|old-\d+)"
    r"|(?:config\.yaml|metrics\.json|README\.md|taskhead\.json|evaluate-.+\.json)\.[a-z0-9_]{8}\.tmp"
    r"|write-test-\d+)$"
)


def foreign_entries(folder: Path, kind: Kind) -> list[str] | None:
    """Why ``folder`` may not be replaced: ``None`` when it may (missing, empty, or a complete or unfinished
    ``kind`` holding only names taskhead writes there), else the entries taskhead did not write (or, for a
    folder without any of ``kind``'s markers, all of them)."""
    folder = real(folder)
    if not folder.exists():
        return None
    if not folder.is_dir():
        return [folder.name]
    entries = sorted(folder.iterdir())
    if not entries:
        return None
    own = [e for e in entries if TEMP.match(e.name) or LEGACY_TEMP.match(e.name)]
    other = [e for e in entries if e not in own]
    if not any(any(folder.glob(m)) for m in kind.markers):
        # no marker: only empty folders of taskhead's names (a first checkpoint that failed) are its own;
        # a config.yaml or README.md there may be the user's
        return [e.name for e in other if not (e.name in kind.names and is_empty_dir(e))] or None
    foreign = [e.name for e in other if not any(fnmatch.fnmatchcase(e.name, n) for n in kind.names)]
    if kind.inside is not None:
        foreign += kind.inside(folder)
    return foreign or None


def check_replaceable(folder: Path, kind: Kind, setting: str, error: type[Exception] = RunDirError) -> None:
    """Refuse to replace a folder that holds files taskhead did not write, whatever the flags.

    Raises:
        ``error`` (RunDirError by default): ``folder`` is a file, or holds entries not ``kind``'s own.
    """
    foreign = foreign_entries(folder, kind)
    if foreign is None:
        return
    if not real(folder).is_dir():
        raise error(f"{setting} {folder}: exists and is not a folder; choose another {setting}")
    shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
    raise error(
        f"{setting} {folder}: is not {kind.what} (it holds {shown}, which taskhead did not write); "
        f"taskhead replaces only its own folders, even with --overwrite: choose another {setting}"
    )


def check_output_file(output: str | Path, flag: str, inputs: list[str | Path | None]) -> Path:
    """An output file the command may write, checked before any model loads: not a folder, not one of the
    command's own ``inputs`` (the same file through any name: links, ``..``), in a folder that exists or can
    be made. Returns it as given.

    Raises:
        RunDirError: one line naming ``flag`` and what to do.
    """
    path = Path(output)
    if real(path).is_dir():
        raise RunDirError(
            f"{flag} {output}: is a folder; give a file name (e.g. {Path(output) / 'out.jsonl'})"
        )
    for source in inputs:
        if source is None or str(source) == "-":
            continue
        try:
            same = real(path) == real(Path(source)) or (path.exists() and os.path.samefile(path, source))
        except OSError:
            same = False
        if same:
            raise RunDirError(
                f"{flag} {output}: is the input file {source}; writing there would destroy it: choose "
                f"another output file"
            )
    return path
