"""The run directory: the contract between training and everything after it.

```
RUN/model/  RUN/taskhead.json  RUN/config.yaml  RUN/metrics.json  RUN/README.md  RUN/checkpoints/
```
Every file is written to a temporary name and renamed. ``taskhead.json`` is written last, so a directory
without it is an unfinished run and is never loaded.
"""

from __future__ import annotations

import errno
import fcntl
import fnmatch
import json
import os
import re
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taskhead.errors import RunDirError

META_FILE = "taskhead.json"
FORMAT_VERSION = 1


# Every temporary name taskhead writes beside a target ``NAME`` is ``.NAME.taskhead-KIND-TOKEN``: KIND is
# ``tmp`` (being filled), ``new`` (complete, about to be moved in) or ``old`` (the replaced one, about to be
# removed), and ``.NAME.taskhead-lock-TOKEN`` is held (flock) by every process writing under that TOKEN. A
# name whose lock no live process holds - and, for the lock-less temporary files of ``atomic_write_text``,
# whose TOKEN's process id is not alive - is the leftover of a killed command.
TEMP = re.compile(
    r"^\.(?P<name>.+)\.taskhead-(?P<kind>tmp|new|old|lock)-(?P<token>[\w.-]+?)(?P<suffix>\.tmp)?$"
)


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux /proc), else set and reset."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _file_mode(path: Path) -> int:
    """The mode a new file at ``path`` gets: the replaced file's permission bits, else 0o666 less the umask
    (as ``open()`` would; ``mkstemp`` makes 0o600, which hides outputs from teammates on a shared disk)."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        return 0o666 & ~current_umask()


def apply_umask(folder: Path) -> None:
    """Add to every folder and file under ``folder`` (itself included) the permission bits the umask allows
    (0o777 / 0o666 less the umask), never taking any away (a group folder's setgid bit stays). Libraries
    write some outputs through ``mkstemp`` (transformers' ``save_pretrained``: 0o600), which would hide a
    run from teammates on a shared disk."""
    mask = current_umask()
    for path in [folder, *folder.rglob("*")]:
        try:
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                continue
            wanted = (0o777 if stat.S_ISDIR(st.st_mode) else 0o666) & ~mask
            if st.st_mode & wanted != wanted:
                os.chmod(path, stat.S_IMODE(st.st_mode) | wanted)
        except OSError:
            continue


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def run_identity(path: Path) -> tuple[int, int] | None:
    """Which folder is at ``path`` now (device and inode, None when missing): a swap changes it, so a reader
    that reads several files by path can tell that they came from one folder."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def real(path: Path) -> Path:
    """``path`` as the file system sees it: absolute, ``.``/``..`` resolved, symbolic links followed, so
    that a temporary name beside it lands beside the real file or folder (same file system, one rename)."""
    return Path(os.path.realpath(path))


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file renamed over it: readers see the old or the new
    content, never a part. The file gets the replaced file's mode, else the umask's (not mkstemp's 0o600);
    a symbolic link is written through (its target is replaced), as ``>`` would.

    Raises:
        OSError: the folder cannot be written (full disk, permissions); the temporary file is removed.
    """
    path = real(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_leftovers(path)
    mode = _file_mode(path)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.taskhead-tmp-{os.getpid()}-", suffix=".tmp", dir=path.parent
    )
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


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


def _sibling(target: Path, kind: str, token: str) -> Path:
    return target.with_name(f".{target.name}.taskhead-{kind}-{token}")


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
        self.path = _sibling(target, "tmp", self.token)
        target.parent.mkdir(parents=True, exist_ok=True)
        lock = _sibling(target, "lock", self.token)
        self._lock = open(lock, "a")  # noqa: SIM115 - held until commit() or discard()
        fcntl.flock(self._lock, fcntl.LOCK_SH)
        self.path.mkdir(exist_ok=True)

    def commit(self) -> None:
        """Put the filled folder at ``target``; the replaced one is removed."""
        apply_umask(self.path)
        if not self.target.exists() or _is_empty_dir(self.target):
            if self.target.exists():
                self.target.rmdir()
            os.replace(self.path, self.target)
        elif _exchange(self.path, self.target):
            shutil.rmtree(self.path, ignore_errors=True)  # now the old folder
        else:  # two renames; recover() puts a complete one back if a kill falls between them
            new, old = _sibling(self.target, "new", self.token), _sibling(self.target, "old", self.token)
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


def _is_empty_dir(path: Path) -> bool:
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


def _leftovers(target: Path) -> dict[str, list[Path]]:
    """Temporary names beside ``target``, by token."""
    found: dict[str, list[Path]] = {}
    try:
        entries = list(target.parent.iterdir())
    except OSError:
        return found
    for entry in entries:
        m = TEMP.match(entry.name)
        if m and m.group("name") == target.name:
            found.setdefault(m.group("token"), []).append(entry)
    return found


def _alive(target: Path, token: str, entries: list[Path]) -> bool:
    """Whether a live process still writes under ``token``: it holds the lock, or (lock-less temporary files)
    the process id the token starts with is running."""
    lock = _sibling(target, "lock", token)
    if lock in entries:
        try:
            with open(lock, "a") as fh:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return True
                fcntl.flock(fh, fcntl.LOCK_UN)
            return False
        except OSError:
            return True  # cannot tell: leave it
    pid = token.split("-", 1)[0]
    return pid.isdigit() and _pid_alive(int(pid))


def _remove(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        entry.unlink(missing_ok=True)


def recover(target: Path) -> None:
    """Where a kill fell between the two renames of the fallback swap, ``target`` is missing and the
    complete new (else the old) folder waits beside it: put it back. Every reader of a run, index or export
    calls it."""
    if target.exists():
        return
    for token, entries in _leftovers(target).items():
        if _alive(target, token, entries):
            continue
        for kind in ("new", "old"):
            candidate = _sibling(target, kind, token)
            if candidate in entries:
                try:
                    os.replace(candidate, target)
                except OSError:
                    continue
                return


def _remove_dead_leftovers(target: Path, keep: Collection[str] = ()) -> list[Path]:
    removed = []
    for token, entries in _leftovers(target).items():
        if token in keep or _alive(target, token, entries):
            continue
        lock = _sibling(target, "lock", token)
        for entry in sorted(entries, key=lambda e: e == lock):  # the lock last
            _remove(entry)
            removed.append(entry)
    return removed


def clean_leftovers(target: Path, keep: Collection[str] = ()) -> list[Path]:
    """Put back a ``target`` lost between two renames (``recover``), then remove what killed writers left
    beside it: the folders and files no live process holds, except those of the tokens in ``keep``. Returns
    the removed paths (for a report)."""
    target = real(target)
    recover(target)
    return [
        p
        for p in _remove_dead_leftovers(target, keep)
        if not p.name.endswith(".tmp") and TEMP.match(p.name)["kind"] != "lock"  # type: ignore[index]
    ]


def killed_stagings(target: Path, include_live: bool = False) -> dict[str, Path]:
    """Staging folders beside ``target`` that no live process holds and that hold training checkpoints
    (a killed ``train``): token -> folder, newest first. ``--resume`` continues the newest; a plain train
    refuses to discard them; ``--overwrite`` removes them. ``include_live``: also those a live process holds
    (the other ranks of a distributed run, whose rank 0 has adopted one already)."""
    target = real(target)
    found = []
    for token, entries in _leftovers(target).items():
        folder = _sibling(target, "tmp", token)
        trained = folder in entries and any(p.is_dir() for p in (folder / "checkpoints").glob("checkpoint-*"))
        if trained and (include_live or not _alive(target, token, entries)):
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
        target.parent.mkdir(parents=True, exist_ok=True)
        self.path = _sibling(target, "lock", "writer")
        self._fh = open(self.path, "a+")  # noqa: SIM115 - held until release()
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
        for token, entries in _leftovers(target).items()
        if not _alive(target, token, entries)
        for p in entries
        if _temp_kind(p) != "lock"
    ]


def _temp_kind(path: Path) -> str | None:
    """The kind (``tmp``, ``new``, ``old``, ``lock``) of a temporary name beside a target; None for another
    name."""
    m = TEMP.match(path.name)
    return m["kind"] if m else None


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
        return [e.name for e in other if not (e.name in kind.names and _is_empty_dir(e))] or None
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
