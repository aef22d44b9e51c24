"""Outputs are written whole under their final name, in the format their name says; concurrent
writers never collide and a reader never sees a partial file."""

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from portrait import files
from portrait.files import atomic_target, atomic_write, atomic_write_text, clean_stale_temporaries, read_parquet

ROOT = Path(__file__).resolve().parents[1]


def test_atomic_write_picks_the_format_from_the_name_and_leaves_no_temporary_file(tmp_path):
    frame = pd.DataFrame({"customer_id": ["a", "b"], "persona_id": [0, 3]})
    atomic_write(frame, tmp_path / "out" / "assignments.csv")
    atomic_write(frame, tmp_path / "out" / "assignments.parquet")
    assert (tmp_path / "out" / "assignments.csv").read_text() == "customer_id,persona_id\na,0\nb,3\n"
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "out" / "assignments.parquet"), frame)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["assignments.csv", "assignments.parquet"]


def test_a_sorted_table_is_written_in_row_groups_a_point_read_skips(tmp_path):
    """One row group of a million rows made a profile's read of one customer's features scan
    the whole file (10 s at 1M customers)."""
    import pyarrow.parquet as pq

    ids = [f"C{i:07d}" for i in range(2 * files.PARQUET_ROW_GROUP_ROWS + 5)]
    atomic_write(pd.DataFrame({"customer_id": ids, "x": range(len(ids))}), tmp_path / "t.parquet")
    metadata = pq.ParquetFile(tmp_path / "t.parquet").metadata
    assert metadata.num_row_groups == 3
    assert metadata.row_group(1).column(0).statistics.min == ids[files.PARQUET_ROW_GROUP_ROWS]
    row = read_parquet(tmp_path / "t.parquet", filters=[("customer_id", "==", ids[-1])])
    assert row["x"].tolist() == [len(ids) - 1]


def test_atomic_write_replaces_an_existing_file(tmp_path):
    target = tmp_path / "latest.txt"
    atomic_write_text("scores_2025-01-01.parquet", target)
    atomic_write_text("scores_2025-02-01.parquet", target)
    assert target.read_text() == "scores_2025-02-01.parquet"
    assert list(tmp_path.iterdir()) == [target]


def test_written_files_get_the_usual_permissions_not_the_private_temporary_ones(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    atomic_write_text("x", tmp_path / "LATEST")
    assert (tmp_path / "LATEST").stat().st_mode & 0o777 == 0o666 & ~umask


# ---------------------------------------------------------------- the text writer is atomic


def test_text_writer_failing_mid_write_leaves_the_old_content_whole(tmp_path):
    target = tmp_path / "LATEST"
    atomic_write_text("scores_2025-01-01.parquet", target)
    # A lone surrogate cannot be encoded: the write fails after it has started.
    with pytest.raises(UnicodeEncodeError):
        atomic_write_text("scores_2025-02-01.parquet \udcff", target)
    assert target.read_text() == "scores_2025-01-01.parquet"
    assert list(tmp_path.iterdir()) == [target]  # and the temporary file is gone


def test_text_writer_never_rewrites_the_file_a_reader_has_open(tmp_path):
    """Writing in place (open, truncate, write) would change the content under an open reader;
    writing a new file and renaming it over the old one does not."""
    target = tmp_path / "summary.json"
    atomic_write_text('{"run": 1}', target)
    before = target.stat().st_ino
    with target.open() as reader:
        atomic_write_text('{"run": 2, "longer": true}', target)
        assert reader.read() == '{"run": 1}'
    assert target.stat().st_ino != before
    assert target.read_text() == '{"run": 2, "longer": true}'


def test_frame_writer_failing_mid_write_leaves_the_old_file_whole(tmp_path):
    target = tmp_path / "scores.parquet"
    atomic_write(pd.DataFrame({"score": [0.5]}), target)
    unwritable = pd.DataFrame({"score": [0.1, "not a number"]})  # mixed object column: pyarrow refuses
    with pytest.raises(Exception):  # noqa: B017 (pyarrow's error type varies by version)
        atomic_write(unwritable, target)
    pd.testing.assert_frame_equal(pd.read_parquet(target), pd.DataFrame({"score": [0.5]}))
    assert list(tmp_path.iterdir()) == [target]


def test_atomic_target_renames_only_on_success(tmp_path):
    target = tmp_path / "quarantine.parquet"
    with pytest.raises(RuntimeError):
        with atomic_target(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    with atomic_target(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".quarantine.parquet.") and tmp.name.endswith(".tmp")
        tmp.write_bytes(b"whole")
    assert target.read_bytes() == b"whole"


def test_a_writers_error_without_a_file_name_is_given_the_targets(tmp_path, monkeypatch):
    """pyarrow's full-disk error names no file ("[Errno 28] Error writing bytes to file")."""
    import errno

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", disk_full)
    target = tmp_path / "scores.parquet"
    with pytest.raises(OSError) as raised:
        atomic_write(pd.DataFrame({"a": [1]}), target)
    assert (raised.value.errno, raised.value.filename) == (errno.ENOSPC, str(target))
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- concurrent writers

_WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import pandas as pd
    from portrait.files import atomic_write, atomic_write_text
    target, seed, rounds = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    for i in range(rounds):
        n = 2_000 + (seed * 7919 + i * 104729) % 20_000  # every write a different size
        atomic_write(pd.DataFrame({"writer": [seed] * n, "i": range(n)}), target)
        atomic_write_text(f"writer {seed} round {i}\\n" * (1 + n // 100), target.with_suffix(".txt"))
    """
)


def test_two_processes_writing_one_target_while_a_third_reads_never_collide(tmp_path):
    target = tmp_path / "scores.parquet"
    atomic_write(pd.DataFrame({"writer": [0], "i": [0]}), target)
    atomic_write_text("writer 0 round 0\n", target.with_suffix(".txt"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(target), str(seed), "60"],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in (1, 2)
    ]
    reads, failures = 0, []
    while any(w.poll() is None for w in writers) or reads < 20:
        try:
            frame = read_parquet(target)  # one open: pyarrow may open a path twice
            assert frame["writer"].nunique() == 1 and frame["i"].tolist() == list(range(len(frame)))
            lines = target.with_suffix(".txt").read_text().splitlines()
            assert lines and len(set(lines)) == 1 and lines[0].startswith("writer ")
        except Exception as exc:  # noqa: BLE001 (any unreadable read is the failure we count)
            failures.append(repr(exc))
        reads += 1
    errors = [w.stderr.read() for w in writers]
    assert [w.returncode for w in writers] == [0, 0], errors
    assert failures == [], f"{len(failures)} of {reads} reads failed, first: {failures[:3]}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.parquet", "scores.txt"]


# ---------------------------------------------------------------- stale temporary files


def test_a_killed_writers_temporary_file_is_cleaned_on_the_next_write(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)  # that process has exited: its files are abandoned
    abandoned = tmp_path / f".scores.parquet.abcd1234.{dead_pid}-{files.HOST_TAG}.tmp"
    abandoned.write_bytes(b"PAR1 half a file")
    # DuckDB's COPY into that temporary wrote its own beside it (before USE_TMP_FILE false)
    abandoned_copy = tmp_path / f"tmp_.scores.parquet.abcd1234.{dead_pid}-{files.HOST_TAG}.tmp"
    abandoned_copy.write_bytes(b"PAR1 1,500,000 rows")
    ours = tmp_path / f".scores.parquet.efgh5678.{os.getpid()}-{files.HOST_TAG}.tmp"
    ours.write_bytes(b"a write of this live process")
    legacy_old = tmp_path / "features_2025-01-01.parquet.tmp"  # the fixed name older versions used
    legacy_old.write_bytes(b"PAR1")
    hour_ago = time.time() - files.STALE_AFTER_SECONDS - 60
    os.utime(legacy_old, (hour_ago, hour_ago))
    legacy_new = tmp_path / "scores_2025-01-01.parquet.tmp"  # maybe an older version writing now
    legacy_new.write_bytes(b"PAR1")
    other_host = tmp_path / f".LATEST.ijkl9012.{dead_pid}-00000000.tmp"  # a writer on another machine
    other_host.write_bytes(b"x")
    unrelated = tmp_path / "notes.tmp"
    unrelated.write_bytes(b"not ours")

    atomic_write_text("scores_2025-02-01.parquet", tmp_path / "LATEST")

    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["LATEST", ours.name, legacy_new.name, other_host.name, unrelated.name]
    )
    os.utime(other_host, (hour_ago, hour_ago))
    assert clean_stale_temporaries(tmp_path) == [other_host]


def test_cleaning_ignores_files_that_vanish_meanwhile(tmp_path, monkeypatch):
    path = tmp_path / ".a.parquet.abcd1234.12345-00000000.tmp"
    path.write_bytes(b"")
    real_stat = Path.stat

    def vanishing_stat(self, *args, **kwargs):
        if self == path:
            path.unlink(missing_ok=True)
            raise FileNotFoundError(path)
        return real_stat(self, *args, **kwargs)

    monkeypatch.setattr(Path, "stat", vanishing_stat)
    clean_stale_temporaries(tmp_path)  # no error


# ---------------------------------------------------------------- concurrent first runs of an experiment


def test_two_simultaneous_first_runs_create_the_experiment_once(tracking, monkeypatch):
    import mlflow

    from training.tracking import ensure_experiment

    name = f"race_{time.time_ns()}"
    callers = 4
    barrier = threading.Barrier(callers)
    waited: set[int] = set()
    real_get = mlflow.get_experiment_by_name

    def late_get(experiment_name):
        # Every caller looks before anyone creates: the race the issue saw.
        found = real_get(experiment_name)
        if threading.get_ident() not in waited:
            waited.add(threading.get_ident())
            barrier.wait(timeout=30)
        return found

    monkeypatch.setattr(mlflow, "get_experiment_by_name", late_get)
    ids, errors = [], []

    def run():
        try:
            ids.append(ensure_experiment(name))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(ids) == callers and len(set(ids)) == 1
    assert real_get(name).experiment_id == ids[0]


def test_a_store_being_created_is_waited_for_not_refused_as_empty(tmp_path):
    """A first run holds the store's init lock while MLflow creates the file, 0 bytes at first:
    a run starting at that moment refused it as an emptied store ("the MLflow store ... is
    empty"; seen once in the race test above, its four threads in a new store). It now waits
    for the creator and uses the store; an empty file nobody is creating is still refused."""
    from portrait.tracking import _exclusive, _init_lock, empty_store

    database = tmp_path / "mlflow.db"
    database.touch()
    holding, done = threading.Event(), threading.Event()

    def create():
        with _exclusive(_init_lock(database)):
            holding.set()
            time.sleep(0.3)
            database.write_bytes(b"SQLite format 3\x00")
            done.set()  # before the lock is released: the waiter may run at once after it

    creator = threading.Thread(target=create)
    creator.start()
    assert holding.wait(timeout=10)
    assert empty_store(database) is None
    assert done.is_set()  # it waited for the creator
    creator.join()
    left = tmp_path / "left.db"
    left.touch()
    assert "the MLflow store" in empty_store(left) and left.stat().st_size == 0


_FIRST_RUN = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from portrait.tracking import setup_tracking
    from training.tracking import ensure_experiment
    setup_tracking(Path(sys.argv[1]))
    print(ensure_experiment("first"))
    """
)


def test_two_first_runs_in_a_new_folder_create_the_store_and_the_experiment_once(tmp_path):
    """Without a store yet, both runs would create its tables at once (about 10 s) and one would
    fail in the middle of MLflow's schema migrations."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | {"PYTHONPATH": str(ROOT)}
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", _FIRST_RUN, str(tmp_path)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err.decode()[-2000:] for _, err in outputs]
    assert {out.strip() for out, _ in outputs} == {b"1"}


def test_a_held_lock_stops_a_second_holder_at_once_and_is_free_after(tmp_path):
    lock = tmp_path / "job.lock"
    with files.exclusive_lock(lock, "the nightly job"):
        with pytest.raises(files.LockHeld, match=rf"the nightly job is already running \(pid {os.getpid()} on "):
            with files.exclusive_lock(lock, "the nightly job"):
                raise AssertionError("entered a held lock")
    with files.exclusive_lock(lock, "the nightly job"):  # released when the block ended
        pass
    # held by another command than the job (a forget holding a refresh's lock): named as such,
    # not as the job "already running"
    with files.exclusive_lock(lock, "the nightly job", holder="portrait forget on data"):
        with pytest.raises(
            files.LockHeld,
            match=rf"^the nightly job cannot run now: portrait forget on data \(pid {os.getpid()} on .*\) holds its lock",
        ):
            with files.exclusive_lock(lock, "the nightly job"):
                raise AssertionError("entered a held lock")


def test_a_lock_is_released_when_its_holder_is_killed(tmp_path):
    lock = tmp_path / "job.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import time
                from portrait import files
                with files.exclusive_lock({str(lock)!r}, "job"):
                    print("held", flush=True)
                    time.sleep(60)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(files.LockHeld, match=rf"pid {holder.pid} on"):
            with files.exclusive_lock(lock, "job"):
                pass
    finally:
        holder.kill()
        holder.wait()
    with files.exclusive_lock(lock, "job"):
        pass


def test_benchmarks_write_files_only_through_the_atomic_writer():
    # A benchmark's cache read by its next run must be whole: no direct writes in benchmarks/.
    import ast

    direct = {"to_parquet", "to_csv", "write_text", "write_bytes", "write_table"}
    found = []
    for path in sorted(Path(__file__).resolve().parents[1].glob("benchmarks/*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "attr", getattr(node.func, "id", ""))
                modes = node.args[1:2] + [k.value for k in node.keywords if k.arg == "mode"]
                opened_for_writing = name == "open" and any(
                    isinstance(m, ast.Constant) and isinstance(m.value, str) and set(m.value) & set("wax")
                    for m in modes
                )
                if name in direct or opened_for_writing:
                    found.append(f"{path.name}:{node.lineno} {name}")
    assert found == [], "write through portrait.files.atomic_write / atomic_target instead"


def test_an_interrupted_benchmark_cache_write_leaves_the_old_cache(tmp_path, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "bench_features", Path(__file__).resolve().parents[1] / "benchmarks" / "bench_features.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "features_10_duckdb-all.parquet"
    pd.DataFrame({"customer_id": ["old"]}).to_parquet(out)
    monkeypatch.setattr("features.build.build_features", lambda *a, **k: pd.DataFrame({"customer_id": ["new"]}))

    class Connection:
        def close(self):
            pass

    class Opened:  # the data set is never read: build_features is replaced above
        def connect(self, memory_limit=None):
            return Connection()

    monkeypatch.setattr("portrait.dataset.open_dataset", lambda path: Opened())

    def killed(self, path, *args, **kwargs):
        Path(path).write_bytes(b"PAR1 half a table")
        raise KeyboardInterrupt

    monkeypatch.setattr(pd.DataFrame, "to_parquet", killed)
    with pytest.raises(KeyboardInterrupt):
        bench.run_duckdb(tmp_path, None, out, "2025-01-01", None)
    monkeypatch.undo()
    assert pd.read_parquet(out)["customer_id"].tolist() == ["old"]
    assert [p.name for p in tmp_path.iterdir()] == [out.name]


def test_a_folder_replacement_whose_rename_fails_keeps_the_previous_folder(tmp_path):
    """replace_directory on a file system without an atomic exchange (Spark's Hadoop one): the
    previous folder is moved aside, and moved back when the new one cannot be renamed in."""
    final, work = tmp_path / "scores", tmp_path / ".scores.abcd1234.tmp"
    final.mkdir()
    (final / "old.txt").write_text("old")
    work.mkdir()
    (work / "new.txt").write_text("new")

    class NoExchange(files.LocalFolders):
        def exchange(self, a, b):
            return False

    class Refusing(NoExchange):
        def rename(self, source, target):
            return False if source == str(work) else super().rename(source, target)

    with pytest.raises(files.PortraitError, match="previous one is kept"):
        files.replace_directory(work, final, Refusing())
    assert sorted(p.name for p in tmp_path.iterdir()) == [".scores.abcd1234.tmp", "scores"]
    assert [p.name for p in final.iterdir()] == ["old.txt"]
    files.replace_directory(work, final, NoExchange())
    assert [p.name for p in tmp_path.iterdir()] == ["scores"] and [p.name for p in final.iterdir()] == ["new.txt"]


def test_targets_that_cannot_be_written_are_refused_before_any_is_written(tmp_path):
    from portrait.errors import PortraitError

    (tmp_path / "crowd.html").mkdir()
    (tmp_path / "a_file").write_text("x")
    files.check_targets([tmp_path / "crowd.csv", tmp_path / "new" / "deeper" / "crowd.md"])  # absent: fine
    with pytest.raises(PortraitError, match=r"cannot write .*crowd.html: it is a folder"):
        files.check_targets([tmp_path / "crowd.csv", tmp_path / "crowd.html"])
    with pytest.raises(PortraitError, match=r"cannot write .*a_file/crowd.csv: .*a_file is a file, not a folder"):
        files.check_targets([tmp_path / "a_file" / "crowd.csv"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "crowd.html"]  # the probes are gone


def test_a_folder_that_takes_no_new_file_is_refused_before_the_work(tmp_path, monkeypatch):
    """A read-only (or immutable) --out failed only at the last write, after the scoring,
    naming a hidden temporary file."""
    from portrait.errors import PortraitError

    def refused(*args, **kwargs):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(files.tempfile, "mkstemp", refused)
    with pytest.raises(
        PortraitError, match=r"cannot write .*scores.parquet: .* does not take new files \(Operation not permitted\)"
    ):
        files.check_targets([tmp_path / "scores.parquet"])


def test_duckdbs_copy_over_the_temporary_writes_no_file_of_its_own(tmp_path, monkeypatch):
    """The temporary exists (empty) when COPY runs, so DuckDB wrote to "tmp_<its name>" and
    renamed it over ours: a kill in between left that file, visible and never cleaned. Written
    in place, the temporary keeps its inode."""
    import contextlib

    import duckdb

    from portrait.adapters import _write

    inodes = []
    real_target = _write.atomic_target

    @contextlib.contextmanager
    def watching(target):
        with real_target(target) as tmp:
            before = os.stat(tmp).st_ino
            yield tmp
            inodes.append((before, os.stat(tmp).st_ino))

    monkeypatch.setattr(_write, "atomic_target", watching)
    with duckdb.connect() as con:
        assert _write.copy_to_parquet(con, "SELECT range AS id FROM range(1000)", tmp_path / "ids.parquet") == 1000
    assert len(inodes) == 1 and inodes[0][0] == inodes[0][1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ids.parquet"]
