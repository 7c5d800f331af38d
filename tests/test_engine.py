"""Training entry: exact resume after SIGKILL, save on SIGTERM, atomic checkpoints, non-finite
losses, two-process CPU DDP. Real processes through projects/HPViT/train_net.py."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from hpvit_d2.checkpoint import load_checkpoint_file

from tiny_coco import write_tiny_coco

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_NET = os.path.join(ROOT, "projects", "HPViT", "train_net.py")
CONFIG = os.path.join(ROOT, "tests", "configs", "engine_tiny.py")


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_coco")
    write_tiny_coco(str(root), num_images=8)
    return str(root)


def train_cmd(output_dir, *opts, resume=False, num_gpus=1):
    cmd = [sys.executable, TRAIN_NET, "--config-file", CONFIG, "--num-gpus", str(num_gpus)]
    if resume:
        cmd.append("--resume")
    return cmd + [f"train.output_dir={output_dir}", *opts]


def env_for(coco_root):
    env = dict(os.environ, HPVIT_TEST_COCO=coco_root, OMP_NUM_THREADS="1",
               PYTHONWARNINGS="ignore")
    return env


def run(cmd, env, timeout=240):
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def losses_by_iteration(output_dir):
    """The last logged total_loss of each iteration in metrics.json (a resumed run appends)."""
    out = {}
    with open(os.path.join(output_dir, "metrics.json")) as f:
        for line in f:
            record = json.loads(line)
            if "total_loss" in record:
                out[record["iteration"]] = record["total_loss"]
    return out


def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path, coco_root):
    env = env_for(coco_root)
    max_iter = "train.max_iter=80"
    reference = tmp_path / "reference"
    run(train_cmd(reference, max_iter), env)

    interrupted = tmp_path / "interrupted"
    proc = subprocess.Popen(train_cmd(interrupted, max_iter), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = interrupted / "last_checkpoint"
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if last.exists() and last.read_text().strip() >= "model_0000005.pth":
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (interrupted / "model_final.pth").exists(), "finished before it could be killed"
    killed_at = max(losses_by_iteration(interrupted))
    resumed_from = int(last.read_text().strip()[len("model_"):-len(".pth")])
    assert 5 <= resumed_from <= killed_at < 79, (resumed_from, killed_at, sorted(os.listdir(interrupted)))

    run(train_cmd(interrupted, max_iter, resume=True), env)

    expected, got = losses_by_iteration(reference), losses_by_iteration(interrupted)
    assert sorted(got) == sorted(expected) == list(range(80))
    after = [i for i in range(resumed_from + 1, 80)]
    torch.testing.assert_close([got[i] for i in after], [expected[i] for i in after],
                               rtol=1e-5, atol=1e-6)

    a = load_checkpoint_file(str(reference / "model_final.pth"))
    b = load_checkpoint_file(str(interrupted / "model_final.pth"))
    assert a["iteration"] == b["iteration"] == 79
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=1e-5, atol=1e-6, msg=k)
    for (ka, sa), (kb, sb) in zip(sorted(a["trainer"]["optimizer"]["state"].items()),
                                  sorted(b["trainer"]["optimizer"]["state"].items())):
        for name in sa:
            torch.testing.assert_close(sa[name], sb[name], rtol=1e-5, atol=1e-6)
    assert a["trainer"]["hooks"] == b["trainer"]["hooks"]  # lr scheduler state


def test_sigterm_saves_checkpoint_before_exit(tmp_path, coco_root):
    out = tmp_path / "run"
    proc = subprocess.Popen(train_cmd(out, "train.max_iter=100000", "train.checkpointer.period=100000"),
                            env=env_for(coco_root), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    metrics = out / "metrics.json"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and metrics.stat().st_size > 0):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    name = (out / "last_checkpoint").read_text().strip()
    saved = load_checkpoint_file(str(out / name))
    assert name == f"model_{saved['iteration']:07d}.pth" and saved["iteration"] >= 0
    log = (out / "log.txt").read_text()
    assert "Received SIGTERM" in log and f"Saved {name} at iteration {saved['iteration']}" in log


def test_two_process_cpu_ddp_keeps_replicas_equal(tmp_path, coco_root):
    out = tmp_path / "ddp"
    proc = run(train_cmd(out, "train.max_iter=4", "train.ddp_sync_check_period=1",
                         "dataloader.train.total_batch_size=4", num_gpus=2),
               env_for(coco_root), timeout=300)
    log = (out / "log.txt").read_text()
    for i in range(4):
        assert f"ddp_sync_check: iteration {i}: parameters equal on 2 ranks" in log
    assert (out / "model_final.pth").exists() and (out / "metrics.json").exists()
    rank1_log = (out / "log.txt.rank1").read_text()
    assert "Saving checkpoint" not in rank1_log and "Saving checkpoint" in log
    assert not [p for p in os.listdir(out) if p.startswith(".tmp")]
    del proc


def test_interrupted_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    from hpvit_d2.checkpoint import io as ckpt_io
    from hpvit_d2.engine.checkpointer import SafeCheckpointer

    model = torch.nn.Linear(4, 4)
    checkpointer = SafeCheckpointer(model, str(tmp_path))
    checkpointer.save("model_0000001", iteration=1)
    good = {k: v.clone() for k, v in model.state_dict().items()}

    real_save = torch.save

    def dies_half_way(obj, f, *a, **kw):
        real_save(obj, f, *a, **kw)
        f.truncate(f.tell() // 2)
        raise KeyboardInterrupt("killed while writing")

    with torch.no_grad():
        model.weight.add_(1.0)
    monkeypatch.setattr(ckpt_io.torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        checkpointer.save("model_0000003", iteration=3)
    monkeypatch.setattr(ckpt_io.torch, "save", real_save)

    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000001.pth"]
    assert checkpointer.get_checkpoint_file().endswith("model_0000001.pth")
    fresh = torch.nn.Linear(4, 4)
    extra = SafeCheckpointer(fresh, str(tmp_path)).resume_or_load("", resume=True)
    assert extra["iteration"] == 1
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, good[k])


def test_non_finite_loss_names_iteration_and_term(tmp_path):
    from hpvit_d2.engine.checkpointer import SafeCheckpointer
    from hpvit_d2.engine.trainers import FiniteSimpleTrainer
    from detectron2.engine import hooks

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward(self, batch):
            bad = float("nan") if batch >= 2 else 0.0
            return {"loss_ok": self.w.sum(), "loss_mask": self.w.sum() * 0 + bad}

    model = Model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = FiniteSimpleTrainer(model, iter(range(100)), optimizer)
    checkpointer = SafeCheckpointer(model, str(tmp_path))
    trainer.register_hooks([hooks.PeriodicCheckpointer(checkpointer, period=1)])
    with pytest.raises(FloatingPointError, match=r"iteration 2: loss_mask=nan"):
        trainer.train(0, 10)
    assert sorted(p for p in os.listdir(tmp_path) if p.endswith(".pth")) == [
        "model_0000000.pth", "model_0000001.pth"]
    assert torch.isfinite(model.w).all()


def test_strict_init_checkpoint_refuses_missing_backbone_weights(tmp_path, coco_root):
    import timm

    # A plain ViT of another width: every block weight mismatches the tiny HPViT.
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False)
    ckpt = tmp_path / "vit.pth"
    torch.save({"model": vit.state_dict()}, ckpt)
    out = tmp_path / "run"
    cmd = train_cmd(out, "train.max_iter=1", f"train.init_checkpoint={ckpt}")
    proc = subprocess.run(cmd[:2] + ["--strict"] + cmd[2:], env=env_for(coco_root),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "strict loading refused" in proc.stderr and "blocks.0" in proc.stderr
    assert "Traceback" not in proc.stderr
    by_config = subprocess.run(cmd + ["train.strict_init_checkpoint=True"], env=env_for(coco_root),
                               capture_output=True, text=True, timeout=120)
    assert by_config.returncode == 2 and "strict loading refused" in by_config.stderr
    loud = subprocess.run(cmd, env=env_for(coco_root), capture_output=True, text=True, timeout=120)
    assert loud.returncode == 0, loud.stderr[-2000:]
    assert "shape mismatches (left at initialisation)" in loud.stdout
    assert "WARNING:" in loud.stdout and "pre-trained backbone weights" in loud.stdout
