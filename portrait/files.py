"""Writing outputs whole or not at all: a reader (a nightly job, the API) never sees half a file.

Every write that goes through a temporary file and a rename uses :func:`atomic_target`:

- the temporary file is created with :func:`tempfile.mkstemp` in the target's own folder (a
  rename is atomic only within one file system), under a name no other writer can take:
  ``.<target name>.<random>.<pid>-<host tag>.tmp`` (hidden, so a glob for the outputs never
  matches a half-written file);
- it is flushed to disk (``fsync``), given the permissions a plain ``open`` would give, and
  renamed over the target (``os.replace``); the folder is synced so the rename survives a crash;
- if anything fails the temporary file is removed and the old target is left as it was.

A killed process cannot remove its temporary file, so each write first cleans the folder of
*stale* ones (:func:`clean_stale_temporaries`): a temporary file of this machine whose process is
no longer running, or one older than :data:`STALE_AFTER_SECONDS` from another machine (a
shared folder) or left by older versions under the fixed name ``<target>.tmp``. A file of a
live process on this machine is never touched, however old: the write may still be running.

A whole folder (a refresh run, a Spark output of part files) is written under a hidden name
beside its target and published with :func:`replace_directory`: renamed into place, or, over an
existing one, exchanged with it in one atomic rename (Linux) or moved aside first. It works on
the local file system or, given the operations of another (:class:`Folders`: Spark passes
Hadoop's), on that one.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import fcntl
import gzip
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import pandas as pd

from portrait.errors import Busy, PortraitError

STALE_AFTER_SECONDS = 3600
# Which machine wrote a temporary file: a process id means nothing on another machine.
HOST_TAG = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
# (DuckDB's COPY, before USE_TMP_FILE false, wrote to "tmp_" + the temporary's name and renamed.)
_TEMPORARY = re.compile(r"(tmp_)?\..+\.[A-Za-z0-9_]{8}\.(?P<pid>\d+)-(?P<host>[0-9a-f]{8})\.tmp")
# Fixed temporary names of earlier versions ("scores.parquet.tmp"): cleaned only when old.
_LEGACY_TEMPORARY = re.compile(r"[^.].*\.(parquet|csv|json|txt)\.tmp|LATEST\.tmp")


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_current_umask()


@contextlib.contextmanager
def atomic_target(
    path: Path, mode: int | None = None, before_publish: Callable[[], None] | None = None
) -> Iterator[Path]:
    """Yield a fresh temporary path beside ``path`` to write to (by any means: pandas, DuckDB's
    ``COPY``, a Parquet writer); when the block ends without an error it is synced and renamed
    over ``path``; on an error it is removed and ``path`` is left as it was. ``mode``: the file's
    permissions (default: what the umask gives a new file). ``before_publish`` runs once the
    file is written whole, before the rename; if it raises, nothing is published (an export is
    recorded in the audit log only once it is written, and not published unless recorded)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(path.parent)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".{os.getpid()}-{HOST_TAG}.tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        _sync_file(tmp)
        os.chmod(tmp, _FILE_MODE if mode is None else mode)
        if before_publish is not None:
            before_publish()
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.filename is None and exc.errno is not None:  # a writer's own error (pyarrow's): name the file
            raise OSError(exc.errno, os.strerror(exc.errno), str(path)) from exc
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _sync_folder(path.parent)


def file_stamp(path: str | Path) -> str:
    """What changes whenever ``path``'s content may have: its size, modification and change
    times and its identity (an edit keeping size and modification time, by cp -p, rsync -t or a
    coarse clock, changes the change time or the file, which no program sets back); "missing"
    when it cannot be read."""
    try:
        stat = Path(path).stat()
    except OSError:
        return "missing"
    return f"{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ctime_ns}:{stat.st_ino}"


def check_suffix(path: str | Path, allowed: tuple[str, ...], option: str = "--out") -> None:
    """Refuse an output path whose suffix is not one the command writes (``x.xlsx`` would get
    CSV bytes, ``x.parquet`` CSV text): before any work is done."""
    if Path(path).is_dir():
        raise PortraitError(f"{path} is a folder, not a file; give a file path ending in {' or '.join(allowed)}")
    suffix = Path(path).suffix.lower()
    if suffix not in allowed:
        raise PortraitError(
            f"{option} {path}: this command writes {' or '.join(allowed)} files; give a path ending in "
            f"{' or '.join(allowed)}"
        )


def check_targets(paths) -> None:
    """Refuse, before the first of several files is written, a target that is a folder or
    whose folder is a file: each file is written whole or not at all, and this keeps a
    command from leaving some new files beside old ones when a later one cannot be written."""
    probed: set[Path] = set()
    for path in map(Path, paths):
        if path.is_dir():
            raise PortraitError(f"cannot write {path}: it is a folder; move it or choose another --out")
        for parent in path.parents:
            if parent.exists():
                if not parent.is_dir():
                    raise PortraitError(f"cannot write {path}: {parent} is a file, not a folder")
                if parent not in probed:
                    probed.add(parent)
                    _check_writable(parent, path)
                break


def _check_writable(folder: Path, path: Path) -> None:
    """A file can be made in ``folder`` (read-only, immutable, another owner's): found out by
    making one, before the work, not by the last write after minutes of scoring."""
    try:
        fd, name = tempfile.mkstemp(dir=folder, prefix=".portrait-probe.", suffix=".tmp")
    except OSError as exc:
        raise PortraitError(
            f"cannot write {path}: {folder} does not take new files ({exc.strerror or exc}); choose another --out"
        ) from None
    os.close(fd)
    os.unlink(name)


# Rows per Parquet row group. Feature and scores tables are written sorted by customer_id, so a
# reader of one customer (a profile's reasons) skips every group but one by its statistics: at
# 1M customers 0.04-0.18 s against 1.2-10 s for pyarrow's one group of a million rows, for files
# 9% larger and a whole read a little slower (1.5-1.8 s warm against 1.0).
PARQUET_ROW_GROUP_ROWS = 131_072
# Largest dictionary per column chunk: a column of many distinct values (spend, shares) falls
# back to plain encoding after this much instead of hashing a whole row group first. At 1M x
# 163 features: 2.0-2.1 s and 254 MB against 2.7-2.8 s and 262 MB with pyarrow's 1 MB
# (measured, docs/benchmarks.md); the counts and categories keep their dictionaries.
PARQUET_DICTIONARY_BYTES = 64 * 1024


def atomic_write(
    frame: pd.DataFrame, path: Path, csv: bool | None = None, before_publish: Callable[[], None] | None = None
) -> None:
    """Writes ``frame`` to a temporary name beside ``path``, then renames it into place.
    CSV when ``csv`` is true, or when it is None and ``path`` ends in ``.csv``; else Parquet.
    ``before_publish``: as :func:`atomic_target`'s."""
    with atomic_target(path, before_publish=before_publish) as tmp:
        if csv or (csv is None and Path(path).suffix == ".csv"):
            frame.to_csv(tmp, index=False)
        else:
            frame.to_parquet(
                tmp,
                index=False,
                row_group_size=PARQUET_ROW_GROUP_ROWS,
                dictionary_pagesize_limit=PARQUET_DICTIONARY_BYTES,
            )


def atomic_write_text(text: str, path: Path, mode: int | None = None) -> None:
    """``text`` (UTF-8) as the whole new content of ``path``, or no change at all."""
    with atomic_target(path, mode) as tmp:
        with tmp.open("w", encoding="utf-8") as handle:
            handle.write(text)


class Folders(Protocol):
    """The folder operations :func:`replace_directory` needs, on some file system."""

    def exists(self, path: str) -> bool: ...

    def rename(self, source: str, target: str) -> bool:
        """Rename ``source`` to ``target`` (which does not exist); False (or an error) if it could not."""
        ...

    def exchange(self, a: str, b: str) -> bool:
        """Swap two existing folders in one atomic step; False where the file system cannot."""
        ...

    def remove(self, path: str) -> None: ...


class LocalFolders:
    """:class:`Folders` of the local file system."""

    def exists(self, path: str) -> bool:
        return os.path.lexists(path)

    def rename(self, source: str, target: str) -> bool:
        os.rename(source, target)
        return True

    def exchange(self, a: str, b: str) -> bool:
        return _exchange(a, b)

    def remove(self, path: str) -> None:
        shutil.rmtree(path)


def replace_directory(work: str | Path, final: str | Path, folders: Folders | None = None) -> None:
    """Publish the finished folder ``work`` (a hidden sibling of ``final``) as ``final``, whole.
    When ``final`` does not exist ``work`` is renamed to it. When it exists (a re-run) the two
    are exchanged in one atomic rename (Linux ``renameat2(RENAME_EXCHANGE)``), so ``final``
    never disappears, and the old one is removed; elsewhere the old one is moved aside first
    (``.<name>.old-<random>``, hidden), ``work`` renamed, and the old one removed. A rename
    that fails raises and leaves the previous ``final`` in place (moved back if it was moved
    aside); ``work`` is then left for the caller to keep or remove."""
    folders = folders or LocalFolders()
    work, final = str(work), str(final).rstrip("/")
    if not folders.exists(final):
        if not folders.rename(work, final):
            raise PortraitError(f"cannot rename the new output into {final}")
        return
    if folders.exchange(work, final):
        folders.remove(work)
        return
    parent, _, name = final.rpartition("/")
    aside = f"{parent}/.{name}.old-{uuid.uuid4().hex[:8]}" if parent else f".{name}.old-{uuid.uuid4().hex[:8]}"
    if not folders.rename(final, aside):
        raise PortraitError(f"cannot move the previous {final} aside; nothing was changed")
    try:
        renamed = folders.rename(work, final)
    except BaseException:
        folders.rename(aside, final)
        raise
    if not renamed:
        folders.rename(aside, final)
        raise PortraitError(f"cannot rename the new output into {final}; the previous one is kept")
    folders.remove(aside)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: str | Path, b: str | Path) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    done = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return done == 0


_HELD_BY = "held by "  # a lock file's text when another command than its job holds it


class LockHeld(Busy):
    """Another process is running the same job on the same output: run again later (exit 75)."""


@contextlib.contextmanager
def exclusive_lock(lock_path: Path, what: str, wait: float = 0.0, holder: str | None = None) -> Iterator[None]:
    """Run the block as the only holder of ``lock_path`` (an advisory ``flock``), or raise
    :class:`LockHeld`, naming ``what`` and the holder, if another process (or another open of
    the file in this one) holds it: at once, or after waiting up to ``wait`` seconds for it (a
    short write, such as a log's append, is worth waiting for). The operating system releases
    the lock when its holder exits, however it exits, so a killed run never leaves it held. The
    lock file (which names its last holder) is left in place: removing it would let two runs
    lock two files. ``holder``: who takes the lock when it is not ``what`` itself (a forget
    holding a refresh's lock), named to whoever finds it held."""
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait
    with open(lock_path, "a+", encoding="utf-8") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                handle.seek(0)
                held_by = handle.read().strip() or "another process"
                if held_by.startswith(_HELD_BY):  # another command holds this job's lock
                    raise LockHeld(
                        f"{what} cannot run now: {held_by.removeprefix(_HELD_BY)} holds its lock ({lock_path}); "
                        "wait for it to finish and run again"
                    ) from None
                raise LockHeld(
                    f"{what} is already running ({held_by}; lock {lock_path}); wait for it to finish and run again"
                ) from None
        handle.seek(0)
        handle.truncate()
        started = dt.datetime.now().isoformat(timespec="seconds")
        held_by = f"pid {os.getpid()} on {socket.gethostname()} since {started}"
        handle.write(f"{_HELD_BY}{holder} ({held_by})" if holder else held_by)
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def open_bytes(path: Path):
    """``path`` opened for reading bytes, decompressed when its name ends in ``.gz``."""
    return gzip.open(path, "rb") if Path(path).name.endswith(".gz") else open(path, "rb")


def parquet_attrs(source) -> dict:
    """The pandas attributes (``DataFrame.attrs``) a Parquet file was written with, from its
    metadata alone (no rows read): ``source`` is a path or an open file. {} when it has none;
    a file that cannot be read raises ``OSError`` or ``ValueError`` as pyarrow does."""
    import pyarrow.parquet as pq

    return schema_attrs(pq.read_schema(source))


def schema_attrs(schema) -> dict:
    """:func:`parquet_attrs` of a pyarrow schema already read."""
    attrs = json.loads((schema.metadata or {}).get(b"PANDAS_ATTRS", b"{}"))
    return attrs if isinstance(attrs, dict) else {}


def read_parquet(path: Path, **options) -> pd.DataFrame:
    """A Parquet file read through one open handle. Given a path, pyarrow may open it more than
    once (footer, then pages): a rename between the opens would mix two versions of the file.
    Through one handle a reader sees one whole version, however often it is replaced."""
    with open(path, "rb") as handle:
        return pd.read_parquet(handle, **options)


def clean_stale_temporaries(folder: Path, now: float | None = None) -> list[Path]:
    """Remove abandoned temporary files of :func:`atomic_target` (and of older versions) from
    ``folder``; return what was removed. See the module docstring for what counts as stale."""
    now = time.time() if now is None else now
    removed = []
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return removed
    for name in names:
        if not name.endswith(".tmp"):
            continue
        path = Path(folder) / name
        match = _TEMPORARY.fullmatch(name)
        if match is None and not _LEGACY_TEMPORARY.fullmatch(name):
            continue
        try:
            if match is not None and match["host"] == HOST_TAG:
                stale = not _process_alive(int(match["pid"]))
            else:
                stale = now - path.stat().st_mtime > STALE_AFTER_SECONDS
            if stale:
                path.unlink()
                removed.append(path)
        except FileNotFoundError:  # another writer renamed or cleaned it meanwhile
            continue
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    except OverflowError:
        return False
    return True


def _sync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # a platform without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
