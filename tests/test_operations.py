"""
Nothing lost under real operations, with the real tiny config through the training entry, in real
processes (README, "Reliability"):

- SIGTERM / SIGINT to the whole process group (``setsid`` + ``kill -SIG -- -PGID``, ``timeout``)
  with loader workers saves ``model_{iter}.pth``, exits 128 + N, and ``--resume`` goes on from it;
- one live run per output directory (a dead run's lock does not block; leftover ``.tmp-*`` files
  of a killed save are removed at the next start);
- weights holding NaN or Inf are refused by every entry (train, --eval-only, demo, converter,
  model_zoo.get), and a diverged run leaves ``last_checkpoint`` on its last good checkpoint;
- a full disk, a read-only output directory, a truncated .pkl and a mistyped override are one
  ``error:`` line and exit 2.
"""
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time

import pytest
import timm
import torch
from detectron2.config import instantiate

from hpvit_d2 import model_zoo
from hpvit_d2.checkpoint import CheckpointError, load_checkpoint_file, non_finite_tensors
from hpvit_d2.cli.common import run as run_command
from hpvit_d2.cli.convert import main as convert_main
from test_engine import ROOT, env, run, train_cmd  # noqa: F401  (env is a fixture)

LONG = ["train.max_iter=100000", "train.checkpointer.period=100000"]


def wait_for_training(out, proc, timeout=240):
    """Until the run has logged an iteration (training, loader workers started)."""
    metrics = out / "metrics.json"
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and metrics.stat().st_size > 0:
            return
        time.sleep(0.05)
    raise AssertionError(f"training did not start within {timeout}s (exit {proc.poll()})")


@pytest.mark.parametrize("how", ["group-SIGTERM", "group-SIGINT", "timeout"])
def test_stop_signal_to_the_process_group_saves_and_resumes(tmp_path, env, how):  # noqa: F811
    out = tmp_path / "run"
    cmd = train_cmd(out, *LONG)
    if how == "timeout":
        # timeout's expiry is its SIGALRM: it then sends SIGTERM to the child and to its group.
        cmd = ["timeout", "--preserve-status", "-s", "TERM", "3600", *cmd]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    wait_for_training(out, proc)
    if how == "timeout":
        os.kill(proc.pid, signal.SIGALRM)
        sig = signal.SIGTERM
    else:
        sig = signal.SIGINT if how.endswith("SIGINT") else signal.SIGTERM
        os.killpg(proc.pid, sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err[-3000:]
    assert "Traceback" not in err and "killed by signal" not in err, err[-3000:]
    name = (out / "last_checkpoint").read_text().strip()
    saved = load_checkpoint_file(str(out / name))["iteration"]
    assert name == f"model_{saved:07d}.pth"
    assert f"Saved {name} at iteration {saved}" in (out / "log.txt").read_text()
    if how != "group-SIGTERM":
        return
    resumed = subprocess.run(train_cmd(out, f"train.max_iter={saved + 2}", resume=True), env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Starting training from iteration {saved + 1}" in (out / "log.txt").read_text()
    assert load_checkpoint_file(str(out / "model_final.pth"))["iteration"] == saved + 1


def one_error_line(stderr: str) -> str:
    """The single ``error:`` line of a failed command (no traceback, <= 300 characters)."""
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-3000:]
    assert len(lines[0]) <= 300, lines[0]
    return lines[0]


def test_one_live_run_per_output_directory(tmp_path, env):  # noqa: F811
    out = tmp_path / "run"
    out.mkdir()
    (out / ".tmp-abc123.pth").write_bytes(b"half a checkpoint")  # a save killed half-way
    (out / "inference" / ".tmp-evaluation").mkdir(parents=True)  # an evaluation killed half-way
    first = subprocess.Popen(train_cmd(out, *LONG, "train.checkpointer.period=1"), env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_training(out, first)
        assert not (out / ".tmp-abc123.pth").exists()
        assert not (out / "inference" / ".tmp-evaluation").exists()
        config = (out / "config.yaml").read_text()
        second = subprocess.run(train_cmd(out, "train.max_iter=1"), env=env, capture_output=True,
                                text=True, timeout=300)
        assert second.returncode == 2, second.stderr[-3000:]
        error = one_error_line(second.stderr)
        assert f"train.output_dir {out} is in use by a running training (pid {first.pid})" in error
        assert (out / "config.yaml").read_text() == config and first.poll() is None
    finally:
        first.kill()  # SIGKILL: its lock dies with it (its orphaned loader workers do not hold it)
        first.wait()
    saved = load_checkpoint_file(str(out / (out / "last_checkpoint").read_text().strip()))
    resumed = subprocess.run(train_cmd(out, f"train.max_iter={saved['iteration'] + 2}",
                                       resume=True), env=env, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert load_checkpoint_file(str(out / "model_final.pth"))["iteration"] == saved["iteration"] + 1


@pytest.fixture(scope="module")
def nan_detector(tmp_path_factory):
    """An HPViT-tiny detector checkpoint whose weights lie: a NaN in a block, an Inf in the head."""
    model = instantiate(model_zoo.get_config("mask_rcnn_hpvit_tiny.py").model)
    state = model.state_dict()
    state["backbone.bottom_up.blocks.1.attn.qkv.weight"][0, 0] = float("nan")
    state["roi_heads.box_predictor.cls_score.bias"][1] = float("inf")
    path = tmp_path_factory.mktemp("nan") / "model_final.pth"
    torch.save({"model": state, "iteration": 239}, path)
    return path


NAN_NAMES = "backbone.bottom_up.blocks.1.attn.qkv.weight, roi_heads.box_predictor.cls_score.bias"


def test_nan_weights_are_refused_by_model_zoo_and_converter(tmp_path, nan_detector, capsys):
    with pytest.raises(CheckpointError, match=r"NaN or Inf in 2 of its \d+ tensors, e\.g\. "
                                              + NAN_NAMES.replace(".", r"\.")):
        model_zoo.get("mask_rcnn_hpvit_tiny.py", weights=str(nan_detector))
    vit = timm.create_model("vit_base_patch16_224", pretrained=False, embed_dim=128, depth=4,
                            num_heads=4)
    state = vit.state_dict()
    state["blocks.0.mlp.fc1.weight"][3] = float("-inf")
    torch.save(state, tmp_path / "vit.pth")
    dst = tmp_path / "init.pth"
    assert run_command(convert_main, [str(tmp_path / "vit.pth"), str(dst), "--config",
                                      "mask_rcnn_hpvit_tiny.py"]) == 2
    error = one_error_line(capsys.readouterr().err)
    assert "NaN or Inf in 1 of its" in error and "blocks.0.mlp.fc1.weight" in error
    assert not dst.exists()


@pytest.mark.parametrize("entry", ["init_checkpoint", "eval-only", "demo"])
def test_nan_weights_are_refused_by_train_eval_and_demo(tmp_path, env, nan_detector,  # noqa: F811
                                                        entry):
    if entry == "demo":
        from PIL import Image

        Image.new("RGB", (64, 64)).save(tmp_path / "a.png")
        cmd = [sys.executable, os.path.join(ROOT, "projects", "HPViT", "demo.py"), "--config-file",
               "mask_rcnn_hpvit_tiny.py", "--input", str(tmp_path / "a.png"), "--output",
               str(tmp_path / "vis"), "--weights", str(nan_detector)]
    else:
        extra = ["--eval-only"] if entry == "eval-only" else []
        cmd = train_cmd(tmp_path / "run", "train.max_iter=1",
                        f"train.init_checkpoint={nan_detector}", extra=extra)
    training_config = b"# the training run's config.yaml\n"
    if entry == "eval-only":  # evaluating in a training's output directory
        (tmp_path / "run").mkdir()
        (tmp_path / "run" / "config.yaml").write_bytes(training_config)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    error = one_error_line(proc.stderr)
    assert f"{nan_detector}: NaN or Inf in 2 of its" in error and NAN_NAMES in error
    assert not (tmp_path / "run" / "model_final.pth").exists()
    if entry == "eval-only":  # a failed evaluation leaves the training's config.yaml as it was
        assert (tmp_path / "run" / "config.yaml").read_bytes() == training_config


def test_divergence_keeps_last_checkpoint_on_good_weights(tmp_path, env):  # noqa: F811
    out = tmp_path / "run"
    # Warm-up from lr 1e9 x 1e-30: step 0 is harmless, step 1 (lr 2.5e8) ruins the weights.
    proc = subprocess.run(train_cmd(out, "optimizer.lr=1e9", "lr_multiplier.warmup_factor=1e-30",
                                    "train.checkpointer.period=1", "train.max_iter=40"),
                          env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 2, proc.stderr[-3000:]
    error = one_error_line(proc.stderr)
    assert error.startswith("error: training diverged at iteration "), error
    name = (out / "last_checkpoint").read_text().strip()
    assert f"last_checkpoint names {name}, the last one saved before it" in error
    good = load_checkpoint_file(str(out / name))
    assert not non_finite_tensors(good["model"])
    # Every checkpoint after it holds diverged weights and the line names them; weights that were
    # already NaN or Inf were not saved at all.
    later = sorted(p.name for p in out.glob("model_0*.pth") if p.name > name)
    if later:
        assert f"({', '.join(later)} not used: diverged weights)" in error
    else:
        assert "NaN or Inf in" in error and "not saved" in error


def in_namespace(mount: str, directory, cmd):
    """``cmd`` in a new user and mount namespace where ``directory`` gets ``mount`` (a shell
    snippet using $D), as a scheduler's scratch disk or a read-only share would be; the last
    line of its stdout lists what ``directory`` holds at the end."""
    if shutil.which("unshare") is None or subprocess.run(
            ["unshare", "-Urm", "true"], capture_output=True).returncode != 0:
        pytest.skip("unprivileged user and mount namespaces (unshare -Urm) are not available")
    script = f'D="$0"; {mount} || exit 99; "$@"; rc=$?; echo "left in $D:" $(ls -A "$D"); exit $rc'
    return ["unshare", "-Urm", "sh", "-c", script, str(directory), *cmd]


def test_full_disk_at_save_is_one_line(tmp_path, env):  # noqa: F811
    out = tmp_path / "run"
    out.mkdir()
    cmd = in_namespace("mount -t tmpfs -o size=4m tmpfs \"$D\"", out,
                       train_cmd(out, "train.checkpointer.period=1", "train.max_iter=2"))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    error = one_error_line(proc.stderr)
    assert error.startswith(f"error: No space left on device: cannot save {out}/model_0000000.pth")
    assert error.endswith("no checkpoint saved yet")
    left = proc.stdout.strip().splitlines()[-1].split(":", 1)[1].split()
    assert "log.txt" in left and not [name for name in left if name.startswith(".tmp-")]


def test_read_only_output_dir_is_one_line(tmp_path, env):  # noqa: F811
    out = tmp_path / "run"
    out.mkdir()
    cmd = in_namespace('mount --bind "$D" "$D" && mount -o remount,bind,ro "$D"', out,
                       train_cmd(out, "train.max_iter=1"))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"train.output_dir {out} is not writable (Read-only file system)" in one_error_line(
        proc.stderr)


def test_truncated_pkl_checkpoint_is_one_line(tmp_path, env):  # noqa: F811
    state = {k: v.numpy() for k, v in instantiate(
        model_zoo.get_config("mask_rcnn_hpvit_tiny.py").model).state_dict().items()}
    data = pickle.dumps({"model": state, "__author__": "test"})
    path = tmp_path / "model.pkl"
    path.write_bytes(data[: len(data) // 2])
    proc = subprocess.run(train_cmd(tmp_path / "run", "train.max_iter=1",
                                    f"train.init_checkpoint={path}"),
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"{path}: unreadable checkpoint, truncated or corrupt" in one_error_line(proc.stderr)


def test_mistyped_override_is_refused_before_building_anything(tmp_path, env):  # noqa: F811
    out = tmp_path / "run"
    proc = subprocess.run(train_cmd(out, "train.max_iter=abc"), env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "train.max_iter=abc: the value must be an integer" in one_error_line(proc.stderr)
    assert not out.exists()
