"""Faults around the run folder: two runs on one folder, a full disk at any write, Ctrl-C, and
temporary files of live writers.  Each ends in one line and a clear exit status, never a
traceback, a partial file or a silently overwritten result."""

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from slr_prune.atomic import write_atomic, write_bytes_atomic
from slr_prune.cli import main
from slr_prune.errors import DiskFullError

ROOT = Path(__file__).resolve().parents[1]

WORKER = """
import contextlib, io, json, sys, time
from pathlib import Path
from slr_prune.cli import main
sync, me, pairs = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
for i in range(pairs):
    (sync / f"ready.{me}.{i}").touch()
    while not (sync / f"go.{i}").exists():
        time.sleep(0.002)
    err = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(["train", "--epochs", "1", "--no-progress", "--device", "cpu", "--out", str(sync / f"run{i}")])
        except BaseException as e:  # a death: recorded, not hidden
            code, err = f"died: {type(e).__name__}: {e}", err
    result = {"code": code, "seconds": time.perf_counter() - start, "err": err.getvalue()}
    (sync / f"res.{me}.{i}").write_text(json.dumps(result))
"""


def _wait_for(paths, proc_list, limit=600):
    start = time.monotonic()
    while not all(p.exists() for p in paths):
        if any(p.poll() not in (None, 0) for p in proc_list) or time.monotonic() - start > limit:
            pytest.fail("a worker process died or hung: " + " | ".join(
                p.stderr.read().decode()[-2000:] for p in proc_list if p.poll() is not None))
        time.sleep(0.005)


@pytest.mark.slow
def test_two_runs_on_one_folder_exactly_one_runs(tmp_path):
    """20 pairs of processes start `train` on the same --out at the same instant: in each pair one
    trains, the other exits 2 at once with one line naming the folder and the holder."""
    pairs = 20
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path), w, str(pairs)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for w in "ab"]
    results = []
    for i in range(pairs):
        _wait_for([tmp_path / f"ready.{w}.{i}" for w in "ab"], workers)
        (tmp_path / f"go.{i}").touch()
        _wait_for([tmp_path / f"res.{w}.{i}" for w in "ab"], workers)
        results.append([json.loads((tmp_path / f"res.{w}.{i}").read_text()) for w in "ab"])
    for w in workers:
        assert w.wait(60) == 0
    for i, pair in enumerate(results):
        codes = sorted(r["code"] for r in pair)
        assert codes == [0, 2], pair
        refusal = next(r for r in pair if r["code"] == 2)
        lines = refusal["err"].strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in refusal["err"], refusal
        assert f"run{i}" in lines[0] and "in use by another slr-prune run (pid " in lines[0], lines
        assert refusal["seconds"] < 1.0, refusal
        run = tmp_path / f"run{i}"
        assert torch.load(run / "dense.pt", weights_only=True)["result"]["metrics"]
        assert not [p.name for p in run.glob(".*.*.*") if not p.name.startswith(".slr_prune.lock")]
    worst = max(r["seconds"] for pair in results for r in pair if r["code"] == 2)
    print(f"{pairs} pairs: {pairs} ran, {pairs} refused, 0 deaths; slowest refusal {worst:.3f} s")


def test_the_refusal_names_the_holder(tmp_path, capsys):
    """A run folder held by another process: exit 2 at once, one line with its pid, host and command."""
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from slr_prune.cli.common import run_folder_lock\n"
        "with run_folder_lock(sys.argv[1], 'prune'):\n    print('held', flush=True); time.sleep(60)"), str(out)],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"held"
        start = time.perf_counter()
        code = main(["train", "--epochs", "1", "--no-progress", "--out", str(out)])
        elapsed = time.perf_counter() - start
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err
    assert code == 2 and elapsed < 1.0, err
    assert f"pid {holder.pid} on " in err and "slr-prune prune" in err and str(out) in err
    assert len(err.strip().splitlines()) == 1
    assert main(["train", "--epochs", "0", "--no-progress", "--out", str(out)]) == 0  # a dead holder's lock is free


def test_temporary_files_of_live_writers_are_kept(tmp_path):
    """The orphan sweep removes a dead writer's temporary file, never a live process's."""
    target = tmp_path / "report.json"
    live = tmp_path / f".report.json.{os.getppid()}.abcd"
    dead = tmp_path / ".report.json.999999999.abcd"
    old = tmp_path / ".report.json.k1lledwr"
    for p in (live, dead, old):
        p.write_bytes(b"partial")
    write_bytes_atomic(b"{}", target)
    assert live.exists() and not dead.exists() and not old.exists() and target.read_bytes() == b"{}"


def test_torch_out_of_space_is_a_disk_full_error(tmp_path):
    """torch.save's wrapped ENOSPC ('unexpected pos') becomes DiskFullError naming the file; no
    file, partial or temporary, is left."""
    def write(f):
        f.write(b"x" * 10)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    with pytest.raises(DiskFullError) as e:
        write_atomic(write, tmp_path / "pruned.pt")
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(tmp_path / "pruned.pt")
    assert list(tmp_path.iterdir()) == []


PRUNE = ["prune", "--method", "admm", "--ratio", "0.8", "--epochs", "2", "--finetune-epochs", "1",
         "--no-progress", "--device", "cpu", "--bn-batches", "1"]


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """An uninterrupted prune run, and the number of files it writes."""
    root = tmp_path_factory.mktemp("whole")
    assert main(["train", "--epochs", "1", "--no-progress", "--device", "cpu", "--out", str(root / "d")]) == 0
    calls = []
    real = os.fsync
    os.fsync = lambda fd: (calls.append(fd), real(fd))[1]
    try:
        assert main([*PRUNE, "--checkpoint", str(root / "d" / "dense.pt"), "--out", str(root / "w")]) == 0
    finally:
        os.fsync = real
    return root, len(calls)


def _fail_write(monkeypatch, k):
    """Make the k-th file write (counted at its fsync) fail with ENOSPC."""
    import slr_prune.atomic as atomic

    count = [0]
    real = os.fsync

    def fsync(fd):
        count[0] += 1
        if count[0] == k:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    monkeypatch.setattr(atomic.os, "fsync", fsync)


@pytest.mark.slow
def test_disk_full_at_any_write_then_resume_is_bit_identical(whole, tmp_path, monkeypatch, capsys):
    """For each k, the k-th file write of a prune run fails with ENOSPC: exit 2 with one line, no
    0-byte, partial or temporary file; then --resume completes equal to the uninterrupted run."""
    root, writes = whole
    assert writes >= 8  # lock record, 2 phase checkpoints, fine-tune checkpoint, pruned.pt, args, report, figure
    reference = torch.load(root / "w" / "pruned.pt", weights_only=True)
    for k in range(1, writes + 1):
        out = tmp_path / f"r{k}"
        argv = [*PRUNE, "--checkpoint", str(root / "d" / "dense.pt"), "--out", str(out)]
        with monkeypatch.context() as m:
            _fail_write(m, k)
            code = main(argv)
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, (k, err)
        assert "no space left on the device writing" in err and "rerun with --resume" in err, (k, err)
        left = [p for p in out.rglob("*") if p.is_file()] if out.exists() else []
        assert all(p.stat().st_size > 0 for p in left if p.name != ".slr_prune.lock"), (k, left)
        assert not [p for p in left if p.name.startswith(".") and not p.name.startswith(".slr_prune.lock")], k
        assert main([*argv, "--resume"]) == 0, k
        resumed = torch.load(out / "pruned.pt", weights_only=True)
        assert reference["state_dict"].keys() == resumed["state_dict"].keys()
        assert all(torch.equal(reference["state_dict"][n], resumed["state_dict"][n]) for n in resumed["state_dict"]), k
        untimed = [[{key: v for key, v in e.items() if key != "seconds"} for e in r["result"]["finetune"]]
                   for r in (reference, resumed)]
        assert untimed[0] == untimed[1], k


def test_a_full_small_filesystem(tmp_path, capsys):
    """A real full disk where the machine allows mounting a small tmpfs: one line, no partial file."""
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small file system here")
    try:
        code = main(["train", "--epochs", "1", "--no-progress", "--device", "cpu", "--out", str(mount / "r")])
        err = capsys.readouterr().err
        assert code == 2 and "no space left on the device writing" in err and len(err.strip().splitlines()) == 1
        assert not [p for p in mount.rglob("*") if p.is_file() and p.stat().st_size == 0
                    and p.name != ".slr_prune.lock"]
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_ctrl_c_is_one_line_and_exit_130(tmp_path, capsys, monkeypatch):
    from slr_prune.engine import Trainer

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "fit", interrupted)
    code = main(["train", "--epochs", "1", "--no-progress", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 130 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "interrupted" in err and "--resume" in err


@pytest.fixture
def read_only(tmp_path):
    """A folder this process cannot write in: chmod 555, or for root a read-only tmpfs mount."""
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() != 0:
        ro.chmod(0o555)
        yield ro
        ro.chmod(0o755)
        return
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)],
                      capture_output=True).returncode != 0:
        pytest.skip("root writes into read-only folders, and no read-only file system can be mounted here")
    yield ro
    subprocess.run(["umount", str(ro)], check=False)


@pytest.mark.parametrize("argv", [["demo", "--no-progress"], ["train", "--epochs", "1", "--no-progress"]])
def test_a_read_only_out_is_refused_before_compute(read_only, capsys, argv):
    start = time.perf_counter()
    assert main([*argv, "--out", str(read_only / "run")]) == 2
    err = capsys.readouterr().err
    assert "cannot write in" in err and len(err.strip().splitlines()) == 1 and time.perf_counter() - start < 5


@pytest.mark.slow
def test_a_second_process_is_refused_within_a_second_of_starting(tmp_path):
    """Whole processes, imports included: two `python -m slr_prune.cli train` started together on
    one --out; the lock is taken before torch is imported, so the loser exits 2 in well under 1 s."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    for i in range(5):
        out = tmp_path / f"run{i}"
        cmd = [sys.executable, "-m", "slr_prune.cli", "train", "--epochs", "1", "--no-progress", "--out", str(out)]
        start = time.perf_counter()
        procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in "ab"]
        ended: dict[int, float] = {}
        while len(ended) < 2:
            for k, p in enumerate(procs):
                if k not in ended and p.poll() is not None:
                    ended[k] = time.perf_counter() - start
            time.sleep(0.005)
        codes = sorted(p.returncode for p in procs)
        loser = next(k for k, p in enumerate(procs) if p.returncode == 2)
        err = procs[loser].stderr.read().decode()
        assert codes == [0, 2] and len(err.strip().splitlines()) == 1 and "in use by" in err, err
        assert ended[loser] < 1.0, ended
