"""Files as taskhead writes them: atomically (a temporary name beside the target, then one rename), with
the modes the umask allows, and named so that what a killed command leaves can be told apart and removed.

Every temporary name beside a target ``NAME`` is ``.NAME.taskhead-KIND-TOKEN`` (see ``TEMP``).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Collection
from pathlib import Path
from typing import Any

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


def pid_alive(pid: int) -> bool:
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


def sibling(target: Path, kind: str, token: str) -> Path:
    return target.with_name(f".{target.name}.taskhead-{kind}-{token}")


def leftovers(target: Path) -> dict[str, list[Path]]:
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


def alive(target: Path, token: str, entries: list[Path]) -> bool:
    """Whether a live process still writes under ``token``: it holds the lock, or (lock-less temporary files)
    the process id the token starts with is running."""
    lock = sibling(target, "lock", token)
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
    return pid.isdigit() and pid_alive(int(pid))


def _remove(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        entry.unlink(missing_ok=True)


def remove_dead_leftovers(target: Path, keep: Collection[str] = ()) -> list[Path]:
    removed = []
    for token, entries in leftovers(target).items():
        if token in keep or alive(target, token, entries):
            continue
        lock = sibling(target, "lock", token)
        for entry in sorted(entries, key=lambda e: e == lock):  # the lock last
            _remove(entry)
            removed.append(entry)
    return removed


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file renamed over it: readers see the old or the new
    content, never a part. The file gets the replaced file's mode, else the umask's (not mkstemp's 0o600);
    a symbolic link is written through (its target is replaced), as ``>`` would.

    Raises:
        OSError: the folder cannot be written (full disk, permissions); the temporary file is removed.
    """
    path = real(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_leftovers(path)
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
