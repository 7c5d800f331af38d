"""
Training entry (projects/HPViT/train_net.py), as users meet it, in real processes:

- exact resume: the real tiny config (RandomFlip, 2 loader workers) SIGKILLed after a checkpoint
  and resumed with --resume ends with the uninterrupted run's weights (<= 1e-6);
- SIGTERM saves a checkpoint before exiting; interrupted saves keep the previous checkpoint;
- a non-finite loss stops before the optimizer step; a wrong init checkpoint is refused.
"""
import os
import signal
import subprocess
import sys
import time

import pytest
import timm
import torch

from hpvit_d2.checkpoint import HPViTCheckpointer, load_checkpoint_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_NET = os.path.join(ROOT, "projects", "HPViT", "train_net.py")
# The real tiny config, on the mini splits, with its augmentation (RandomFlip) and 2 workers.
SMALL = [
    "dataloader.train.dataset.names=hpvit_shapes_train_mini",
    "dataloader.test.dataset.names=hpvit_shapes_val_mini",
    "dataloader.train.num_workers=2",
    "dataloader.test.num_workers=0",
    "train.checkpointer.period=2",
    "train.checkpointer.max_to_keep=100",
    "train.eval_period=0",
    "train.log_period=1",
]
MAX_ITER = 8


def train_cmd(output_dir, *opts, resume=False, config="mask_rcnn_hpvit_tiny.py", extra=()):
    cmd = [sys.executable, TRAIN_NET, "--config-file", config, *extra]
    if resume:
        cmd.append("--resume")
    return cmd + [f"train.output_dir={output_dir}", f"train.max_iter={MAX_ITER}", *SMALL, *opts]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return dict(os.environ, HPVIT_DATA=str(tmp_path_factory.mktemp("data")), OMP_NUM_THREADS="1",
                PYTHONWARNINGS="ignore")


def run(cmd, env, timeout=300):
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def assert_same_weights(a_path, b_path, atol=1e-6):
    a, b = load_checkpoint_file(str(a_path)), load_checkpoint_file(str(b_path))
    assert a["iteration"] == b["iteration"] == MAX_ITER - 1
    worst = max((a["model"][k] - b["model"][k]).abs().max().item() for k in a["model"])
    assert worst <= atol, f"max abs weight difference {worst:.3g}"
    for (_, sa), (_, sb) in zip(sorted(a["trainer"]["optimizer"]["state"].items()),
                                sorted(b["trainer"]["optimizer"]["state"].items())):
        for name in sa:
            torch.testing.assert_close(sa[name], sb[name], rtol=0, atol=atol)
    return worst


@pytest.fixture(scope="module")
def reference(tmp_path_factory, env):
    """An uninterrupted run (with 0 loader workers: the stream must not depend on them)."""
    out = tmp_path_factory.mktemp("reference")
    run(train_cmd(out, "dataloader.train.num_workers=0"), env)
    return out


def wait_for_checkpoint(out, proc, at_least: str, timeout=240):
    last = out / "last_checkpoint"
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if last.exists() and last.read_text().strip() >= at_least:
            return
        time.sleep(0.05)
    raise AssertionError(f"no {at_least} within {timeout}s (exit {proc.poll()})")


def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path, env, reference):
    out = tmp_path / "killed"
    proc = subprocess.Popen(train_cmd(out), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_for_checkpoint(out, proc, "model_0000003.pth")
    time.sleep(1.0)  # part-way through the next iterations
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "model_final.pth").exists(), "finished before it could be killed"
    resumed_from = int((out / "last_checkpoint").read_text().strip()[6:13])
    assert 3 <= resumed_from < MAX_ITER - 1
    run(train_cmd(out, resume=True), env)
    assert_same_weights(reference / "model_final.pth", out / "model_final.pth")
    # The log file is plain text: detectron2's colour codes stay out of files (stdout is no tty).
    log = (out / "log.txt").read_text()
    assert "mask_rcnn_hpvit_tiny.py" in log and "\x1b[" not in log


def test_sigterm_saves_checkpoint_before_exit(tmp_path, env):
    out = tmp_path / "run"
    proc = subprocess.Popen(train_cmd(out, "train.max_iter=100000", "train.checkpointer.period=100000"),
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    metrics = out / "metrics.json"
    deadline = time.time() + 180
    while time.time() < deadline and not (metrics.exists() and metrics.stat().st_size > 0):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    name = (out / "last_checkpoint").read_text().strip()
    saved = load_checkpoint_file(str(out / name))
    assert name == f"model_{saved['iteration']:07d}.pth" and saved["iteration"] >= 0
    assert "data" in saved and saved["data"]["next_position"] > 0
    log = (out / "log.txt").read_text()
    assert "Received SIGTERM" in log and f"Saved {name} at iteration {saved['iteration']}" in log


def test_interrupted_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    model = torch.nn.Linear(4, 4)
    checkpointer = HPViTCheckpointer(model, str(tmp_path))
    checkpointer.save("model_0000001", iteration=1)
    good = {k: v.clone() for k, v in model.state_dict().items()}

    real_save = torch.save

    def dies_half_way(obj, f, *a, **kw):
        real_save(obj, f, *a, **kw)
        f.truncate(f.tell() // 2)
        raise KeyboardInterrupt("killed while writing")

    with torch.no_grad():
        model.weight.add_(1.0)
    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        checkpointer.save("model_0000003", iteration=3)
    monkeypatch.setattr(torch, "save", real_save)

    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000001.pth"]
    assert checkpointer.get_checkpoint_file().endswith("model_0000001.pth")
    fresh = torch.nn.Linear(4, 4)
    extra = HPViTCheckpointer(fresh, str(tmp_path)).resume_or_load("", resume=True)
    assert extra["iteration"] == 1
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, good[k])


def test_non_finite_loss_stops_before_the_step(tmp_path):
    """detectron2's SimpleTrainer checks the loss before the optimizer step; nothing bad is saved."""
    from detectron2.engine import SimpleTrainer, hooks

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward(self, batch):
            bad = float("nan") if batch >= 2 else 0.0
            return {"loss_ok": self.w.sum(), "loss_mask": self.w.sum() * 0 + bad}

    model = Model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = SimpleTrainer(model, iter(range(100)), optimizer)
    trainer.register_hooks([hooks.PeriodicCheckpointer(HPViTCheckpointer(model, str(tmp_path)), period=1)])
    with pytest.raises(FloatingPointError, match=r"(?s)iteration=2.*loss_mask"):
        trainer.train(0, 10)
    assert sorted(p for p in os.listdir(tmp_path) if p.endswith(".pth")) == [
        "model_0000000.pth", "model_0000001.pth"]
    assert torch.isfinite(model.w).all()


def test_init_checkpoint_of_another_size_is_refused_unless_allowed(tmp_path, env):
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False)  # width 192, not 128
    ckpt = tmp_path / "vit.pth"
    torch.save({"model": vit.state_dict()}, ckpt)
    out = tmp_path / "run"
    cmd = train_cmd(out, "train.max_iter=1", f"train.init_checkpoint={ckpt}")
    refused = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "Traceback" not in refused.stderr
    assert "(width 192, depth 12, patch 16) cannot fill the model's (width 128, depth 6" in refused.stderr
    assert not (out / "model_final.pth").exists()
    allowed = subprocess.run(cmd[:2] + ["--allow-partial"] + cmd[2:], env=env, capture_output=True,
                             text=True, timeout=300)
    assert allowed.returncode == 0, allowed.stderr[-2000:]


def test_strict_refuses_a_checkpoint_missing_a_block_weight(tmp_path, env):
    vit = timm.create_model("vit_base_patch16_224", pretrained=False, embed_dim=128, depth=6,
                            num_heads=4)
    state = vit.state_dict()
    del state["blocks.2.mlp.fc1.weight"]
    ckpt = tmp_path / "partial.pth"
    torch.save(state, ckpt)
    cmd = train_cmd(tmp_path / "run", "train.max_iter=1", f"train.init_checkpoint={ckpt}",
                    extra=["--strict"])
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 2 and "strict loading refused" in proc.stderr
    assert "blocks.2.mlp.fc1.weight" in proc.stderr and "Traceback" not in proc.stderr
