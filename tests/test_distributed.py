"""
Training on several processes, CPU (GLOO), real processes of projects/HPViT/train_net.py with the
real tiny config (RandomFlip, 2 loader workers):

- detectron2's launcher: --num-gpus 2 keeps replicas equal; two localhost "machines"
  (--num-machines 2 --machine-rank R --dist-url tcp://...) end with the same weights;
  when one machine dies, the other exits non-zero in bounded time;
- PyTorch's elastic launcher: under torchrun the processes join its group; a worker killed
  mid-training restarts the group, which resumes from the last checkpoint by itself and ends
  with the uninterrupted run's weights.
"""
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_engine import MAX_ITER, SMALL, TRAIN_NET, assert_same_weights, run, wait_for_checkpoint

TWO_RANKS = ["dataloader.train.total_batch_size=4", "train.ddp_sync_check_period=1"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def args_for(out, *extra):
    return ["--config-file", "mask_rcnn_hpvit_tiny.py", *extra, f"train.output_dir={out}",
            f"train.max_iter={MAX_ITER}", *SMALL, *TWO_RANKS]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return dict(os.environ, HPVIT_DATA=str(tmp_path_factory.mktemp("data")), OMP_NUM_THREADS="1",
                PYTHONWARNINGS="ignore")


@contextlib.contextmanager
def per_user_port_taken():
    """detectron2's per-user --dist-url port held by another listener, as by a second
    multi-process run of the same user (two test suites at once failed so: EADDRINUSE)."""
    from hpvit_d2.cli.train import detectron2_defaults

    port = int(detectron2_defaults()["dist_url"].rsplit(":", 1)[1])
    with socket.socket() as listener:
        try:
            listener.bind(("127.0.0.1", port))
            listener.listen()
        except OSError:  # already taken by someone else: the same situation
            pass
        yield


@pytest.fixture(scope="module")
def two_gpus_run(tmp_path_factory, env):
    """The reference: two processes on one machine (detectron2's launch, GLOO), with no
    --dist-url while the per-user default port is taken: one machine takes a free port."""
    out = tmp_path_factory.mktemp("num_gpus_2")
    with per_user_port_taken():
        run([sys.executable, TRAIN_NET, "--num-gpus", "2", *args_for(out)], env, timeout=400)
    return out


def test_two_processes_keep_replicas_equal(two_gpus_run):
    log = (two_gpus_run / "log.txt").read_text()
    for i in range(MAX_ITER):
        assert f"ddp_sync_check: iteration {i}: parameters equal on 2 ranks" in log
    assert "Saving checkpoint" not in (two_gpus_run / "log.txt.rank1").read_text()
    assert not [p for p in os.listdir(two_gpus_run) if p.startswith(".tmp")]


def machine(rank: int, out: Path, port: int, env, **popen):
    cmd = [sys.executable, TRAIN_NET, "--num-gpus", "1", "--num-machines", "2", "--machine-rank",
           str(rank), "--dist-url", f"tcp://127.0.0.1:{port}", *args_for(out)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True, **popen)


def test_two_localhost_machines_match_one_machine(tmp_path, env, two_gpus_run):
    port = free_port()
    procs = [machine(r, tmp_path / "machines", port, env) for r in (0, 1)]
    for proc in procs:
        out, _ = proc.communicate(timeout=400)
        assert proc.returncode == 0, out[-3000:]
    assert_same_weights(two_gpus_run / "model_final.pth", tmp_path / "machines" / "model_final.pth")


def test_a_dead_machine_ends_the_job_in_bounded_time(tmp_path, env):
    port = free_port()
    out = tmp_path / "dies"
    survivor = machine(0, out, port, env)
    doomed = machine(1, out, port, env)
    metrics = out / "metrics.json"
    deadline = time.time() + 240
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 2):
        assert survivor.poll() is None and doomed.poll() is None, "a machine stopped early"
        time.sleep(0.1)
    killed_at = time.time()
    os.killpg(doomed.pid, signal.SIGKILL)  # the machine dies: launcher, worker and loader workers
    doomed.wait()
    try:
        output, _ = survivor.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(survivor.pid, signal.SIGKILL)
        pytest.fail("the surviving machine still runs 180 s after its peer died")
    waited = time.time() - killed_at
    assert survivor.returncode != 0, output[-2000:]
    assert waited < 180
    print(f"survivor exited with {survivor.returncode} {waited:.1f} s after its peer died")


def _descendants(pid: int):
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            children.append(int(child))
            children += _descendants(int(child))
    return children


def _rank_of(pid: int):
    try:
        variables = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for var in variables:
        if var.startswith(b"RANK="):
            return int(var[5:])
    return None


def test_torchrun_restart_resumes_by_itself(tmp_path, env, two_gpus_run):
    out = tmp_path / "elastic"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "--max-restarts", "1", "--monitor-interval", "0.5", TRAIN_NET, *args_for(out)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        wait_for_checkpoint(out, proc, "model_0000003.pth")
        workers = [p for p in _descendants(proc.pid) if _rank_of(p) == 1]
        assert workers, "no worker with RANK=1 under torchrun"
        os.kill(min(workers), signal.SIGKILL)  # the worker itself (its loader workers follow)
        output, _ = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, output[-4000:]
    log = (out / "log.txt").read_text()
    assert "torchrun restart 1: resuming from the last checkpoint" in log
    assert_same_weights(two_gpus_run / "model_final.pth", out / "model_final.pth")
