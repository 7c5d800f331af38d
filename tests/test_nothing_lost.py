"""
Nothing lost, round four (issue 33; docs/reliability.md): each numbered case of the issue on the
real tiny config as a user meets it (the commands in real processes, or their ``main`` in this
one when nothing is trained), and a rerun that reuses a directory (issue 34, item 5).
"""
import contextlib
import os
import shutil
import subprocess

import pytest
import torch
from detectron2.config import instantiate

from hpvit_d2 import model_zoo
from hpvit_d2.checkpoint import CheckpointError, HPViTCheckpointer, load_checkpoint_file
from hpvit_d2.cli.common import run as run_command
from hpvit_d2.cli.convert import main as convert_main
from test_engine import env, train_cmd  # noqa: F401  (env is a fixture)
from test_operations import one_error_line

TINY = "mask_rcnn_hpvit_tiny.py"


def single_error(stderr: str) -> str:
    """The one ``error:`` line of a failed command, no traceback (its paths may be long here)."""
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def tiny_state():
    """The tiny HPViT detector's state dict (random initialisation)."""
    return instantiate(model_zoo.get_config(TINY).model).state_dict()


def test_case01_float64_overflow_refused_on_every_loading_path(tmp_path, tiny_state, capsys):
    state = {k: v.double() if v.is_floating_point() else v for k, v in tiny_state.items()}
    state["roi_heads.box_predictor.cls_score.weight"][0, 0] = 1e300  # finite in float64 only
    path = tmp_path / "model_final.pth"
    torch.save({"model": state, "iteration": 239}, path)
    expected = (r"NaN or Inf in 1 of its \d+ tensors, e\.g\. roi_heads\.box_predictor\.cls_score"
                r"\.weight \(float64 values beyond the model's float32 range\)")
    with pytest.raises(CheckpointError, match=expected):  # inference: model_zoo, demo, eval-only
        model_zoo.get(TINY, weights=str(path))
    model = instantiate(model_zoo.get_config(TINY).model)
    with pytest.raises(CheckpointError, match=expected):  # training's train.init_checkpoint
        HPViTCheckpointer(model, require="architecture").load(str(path))
    assert torch.isfinite(model.roi_heads.box_predictor.cls_score.weight).all()
    assert run_command(convert_main, [str(path), str(tmp_path / "init.pth"), "--config-file",
                                      TINY, "--allow-partial"]) == 2
    assert "float64 values beyond the model's float32 range" in one_error_line(
        capsys.readouterr().err)
    assert not (tmp_path / "init.pth").exists()


def train(out, *opts, env, resume=False, extra=(), timeout=300):
    """The training command on the mini splits (test_engine.train_cmd), run to its end."""
    return subprocess.run(train_cmd(out, *opts, resume=resume, extra=extra), env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, env):  # noqa: F811
    """A finished 3-iteration run saving every iteration (copy it before changing it)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    done = train(out, "train.max_iter=3", "train.checkpointer.period=1", env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def copy_run(finished_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out, ignore=shutil.ignore_patterns(".hpvit-train.lock"))
    return out


def iterations(metrics_json):
    from hpvit_d2.engine.metrics import read_metrics

    return [r["iteration"] for r in read_metrics(metrics_json) if "total_loss" in r]


def earlier_run_dirs(out):
    folder = out / "earlier_runs"
    return sorted(folder.iterdir()) if folder.exists() else []


DIVERGING = ["optimizer.lr=1e9", "lr_multiplier.warmup_factor=1e-30", "train.max_iter=40"]


def test_case02_divergence_considers_only_this_runs_checkpoints(tmp_path, env,  # noqa: F811
                                                                 finished_run):
    out = copy_run(finished_run, tmp_path)
    earlier = {p.name: p.read_bytes() for p in out.glob("model_*.pth")}
    proc = train(out, *DIVERGING, "train.checkpointer.period=100000", env=env)
    assert proc.returncode == 2, proc.stderr[-3000:]
    error = one_error_line(proc.stderr)
    assert error.startswith("error: training diverged at iteration "), error
    assert "no checkpoint of this run was saved before it: last_checkpoint removed" in error
    assert not (out / "last_checkpoint").exists() and not list(out.glob("model_*.pth"))
    (kept,) = earlier_run_dirs(out)  # the earlier run's files, set aside untouched
    assert {p.name: p.read_bytes() for p in kept.glob("model_*.pth")} == earlier


def test_case02_identity_recorded_in_checkpoints_decides_what_is_this_runs(tmp_path):
    from hpvit_d2.engine.run_identity import RunIdentity
    from hpvit_d2.engine.train_loop import keep_last_good_checkpoint

    model = torch.nn.Linear(2, 2)
    earlier = HPViTCheckpointer(model, str(tmp_path), run=RunIdentity())
    earlier.save("model_0000000", iteration=0)
    earlier.save("model_0000002", iteration=2)
    this = RunIdentity()
    checkpointer = HPViTCheckpointer(model, str(tmp_path), run=this)
    checkpointer.save("model_0000001", iteration=1)
    assert load_checkpoint_file(str(tmp_path / "model_0000001.pth"))["run"] == this.state_dict()
    said = keep_last_good_checkpoint(checkpointer, first_bad=3, run=this)
    assert said == "last_checkpoint names model_0000001.pth, the last one saved before it"
    said = keep_last_good_checkpoint(checkpointer, first_bad=1, run=this)
    assert said == ("no checkpoint of this run was saved before it: last_checkpoint removed "
                    "(model_0000001.pth not used: diverged weights)")
    resumed = RunIdentity()  # a run resumed from an earlier one's file continues its identity
    HPViTCheckpointer(model, str(tmp_path), run=resumed).load(str(tmp_path / "model_0000002.pth"))
    assert resumed.state_dict() == load_checkpoint_file(
        str(tmp_path / "model_0000002.pth"))["run"]


def test_issue34_item5_a_rerun_starts_clean_or_resumes_never_both(tmp_path, env,  # noqa: F811
                                                                 finished_run):
    # The finished run saved its last iteration once, as model_final.pth.
    assert sorted(p.name for p in finished_run.glob("model_*.pth")) == [
        "model_0000000.pth", "model_0000001.pth", "model_final.pth"]
    out = copy_run(finished_run, tmp_path)
    earlier = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    rerun = train(out, "train.max_iter=2", "train.checkpointer.period=1", env=env)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    (kept,) = earlier_run_dirs(out)
    said = [line for line in (rerun.stdout + rerun.stderr).splitlines()
            if f"train.output_dir {out} held an earlier run" in line]
    assert len(said) == 1 and f"moved to {kept}" in said[0] and "--resume" in said[0], said
    assert {p.name: p.read_bytes() for p in kept.iterdir() if p.is_file()} == {
        name: data for name, data in earlier.items() if name != "finished_run.json"}
    assert iterations(out / "metrics.json") == [0, 1]
    assert sorted(p.name for p in out.glob("model_*.pth")) == ["model_0000000.pth",
                                                               "model_final.pth"]
    assert load_checkpoint_file(str(out / "model_final.pth"))["iteration"] == 1
    # Resumed after a stop that came after its last checkpoint: the metrics of the iterations
    # run again are those of the resumed run alone.
    (out / "last_checkpoint").write_text("model_0000000.pth")
    resumed = train(out, "train.max_iter=2", "train.checkpointer.period=1", env=env, resume=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert iterations(out / "metrics.json") == [0, 1]
    assert earlier_run_dirs(out) == [kept]


def test_case07_checkpoint_at_or_past_max_iter_is_nothing_to_train(tmp_path, env,  # noqa: F811
                                                                  finished_run):
    out = copy_run(finished_run, tmp_path)
    metrics = (out / "metrics.json").read_bytes()
    done = train(out, "train.max_iter=2", env=env, resume=True)  # model_final is at iteration 2
    assert done.returncode == 0, done.stderr[-3000:]
    said = [line for line in (done.stdout + done.stderr).splitlines() if "nothing to train" in line]
    assert len(said) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert f"{out}/model_final.pth is at iteration 2, at or past train.max_iter=2" in said[0]
    assert (out / "metrics.json").read_bytes() == metrics  # nothing trained or evaluated again


WHOLE = "must be a whole number"
IMPOSSIBLE = [
    (["train.max_iter=0"], f"train.max_iter=0: {WHOLE} >= 1"),
    (["train.max_iter=-5"], f"train.max_iter=-5: {WHOLE} >= 1"),
    (["dataloader.train.total_batch_size=0"], f"dataloader.train.total_batch_size=0: {WHOLE} >= 1"),
    (["dataloader.train.total_batch_size=-1"], "dataloader.train.total_batch_size=-1: must be"),
    (["train.checkpointer.period=0"], f"train.checkpointer.period=0: {WHOLE} >= 1"),
    (["optimizer.lr=nan"], "optimizer.lr=nan: must be a finite number >= 0"),
    (["optimizer.lr=-1"], "optimizer.lr=-1: must be a finite number >= 0"),
    (["dataloader.train.num_workers=-2"], f"dataloader.train.num_workers=-2: {WHOLE} >= 0"),
    (["model.backbone.bottom_up.depth=0"], f"model.backbone.bottom_up.depth=0: {WHOLE} >= 1"),
    (["model.backbone.bottom_up.depth=7"],
     "model.backbone.bottom_up.stage_depths=[1, 1, 3, 1] must be positive and sum to depth=7"),
    (["--num-gpus", "3", "dataloader.train.total_batch_size=2"],
     "dataloader.train.total_batch_size=2 does not split over the 3 training processes "
     "(--num-gpus 3 x --num-machines 1): use a multiple of 3, e.g. "
     "dataloader.train.total_batch_size=3"),
]


@pytest.mark.parametrize("argv, expected", IMPOSSIBLE, ids=[" ".join(a) for a, _ in IMPOSSIBLE])
def test_case09_impossible_values_are_refused_before_anything_is_built(tmp_path, capsys, argv,
                                                                       expected):
    from hpvit_d2.cli.train import main as train_main

    out = tmp_path / "run"
    code = run_command(train_main, ["--config-file", TINY, f"train.output_dir={out}", *argv])
    assert code == 2
    assert one_error_line(capsys.readouterr().err).startswith(f"error: {expected}")
    assert not out.exists()


@pytest.mark.parametrize("change", ["another model", "num_classes"])
def test_case04_resume_with_another_model_is_one_line_before_loading(tmp_path, env,  # noqa: F811
                                                                     finished_run, change):
    from test_cli import write_coco

    out = copy_run(finished_run, tmp_path)
    saved = (out / "model_final.pth").read_bytes()
    if change == "another model":
        opts, extra = [], ["--config-file", "mask_rcnn_vitdet_tiny.py"]
        expected = (f"error: {out}/model_final.pth: this is an HPViT detector checkpoint (keys "
                    "backbone.bottom_up.*); the config builds ViTDet")
    else:  # the user's own 2-class data, and the model changed to fit it
        json_file, images = write_coco(tmp_path / "coco")
        opts = ["model.roi_heads.num_classes=2", "dataloader.train.dataset.names=mine",
                "dataloader.test.dataset.names=mine"]
        extra = ["--register-coco", "mine", json_file, images]
        expected = (f"error: {out}/model_final.pth: strict loading refused: 6 model tensors "
                    "missing, mismatched or unexpected")
    proc = train(out, *opts, env=env, resume=True, extra=extra)
    assert proc.returncode == 2, proc.stderr[-3000:]
    error = single_error(proc.stderr)
    assert error.startswith(expected), error
    if change == "another model":
        assert error.endswith("use the config it was trained with"), error
    else:
        assert ("likely cause: model.roi_heads.num_classes differs (checkpoint 4 classes, "
                "config 2); --resume continues a run with the model it saved: give the run's "
                "config, or start another run in a new train.output_dir") in error
    assert (out / "model_final.pth").read_bytes() == saved


def test_case04_optimizer_state_is_checked_against_the_optimizer():
    from hpvit_d2.checkpoint.resume import optimizer_state_problem

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    adam = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    adam.step()
    state = adam.state_dict()
    assert optimizer_state_problem(adam, state, model) is None
    two_groups = torch.optim.AdamW([{"params": model[0].parameters()},
                                    {"params": model[1].parameters()}])
    assert optimizer_state_problem(two_groups, state, model) == (
        "the optimizer has 2 parameter groups, the checkpoint's 1")
    wider = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Linear(5, 2))
    assert optimizer_state_problem(torch.optim.AdamW(wider.parameters()), state, wider) == (
        "the checkpoint's exp_avg of 0.weight is (4, 3), the parameter (5, 3)")


def test_case11_non_finite_optimizer_state_is_refused(tmp_path, env, finished_run):  # noqa: F811
    out = copy_run(finished_run, tmp_path)
    checkpoint = load_checkpoint_file(str(out / "model_0000001.pth"))
    checkpoint["trainer"]["optimizer"]["state"][3]["exp_avg_sq"].view(-1)[0] = float("nan")
    torch.save(checkpoint, out / "model_0000001.pth")
    (out / "last_checkpoint").write_text("model_0000001.pth")
    proc = train(out, "train.max_iter=3", env=env, resume=True)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert one_error_line(proc.stderr).startswith(
        f"error: {out}/model_0000001.pth: NaN or Inf in the optimizer state (exp_avg_sq of "
        "backbone.")
    assert (out / "last_checkpoint").read_text() == "model_0000001.pth"
    # Nor is such a state saved.
    model = torch.nn.Linear(2, 2)
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 2)).sum().backward()
    sgd.step()
    sgd.state[model.weight]["momentum_buffer"][0, 0] = float("inf")
    checkpointer = HPViTCheckpointer(model, str(tmp_path / "sgd"), optimizer=sgd)
    with pytest.raises(FloatingPointError, match=r"NaN or Inf in the optimizer state \(momentum_"
                                                 r"buffer of weight\): model_0000000\.pth not saved"):
        checkpointer.save("model_0000000", iteration=0)
    assert not (tmp_path / "sgd" / "model_0000000.pth").exists()


def test_case05_eval_only_takes_the_lock_and_writes_only_under_inference(  # noqa: F811
        tmp_path, env, finished_run):
    from test_operations import LONG, in_namespace, wait_for_training

    weights = f"train.init_checkpoint={finished_run}/model_final.pth"
    live = tmp_path / "live"
    training = subprocess.Popen(train_cmd(live, *LONG), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    try:
        wait_for_training(live, training)
        config = (live / "config.yaml").read_bytes()
        refused = train(live, weights, env=env, extra=["--eval-only"])
        assert refused.returncode == 2, refused.stderr[-3000:]
        assert (f"train.output_dir {live} is in use by a running training (pid {training.pid})"
                in one_error_line(refused.stderr))
        assert (live / "config.yaml").read_bytes() == config and not (live / "inference").exists()
    finally:
        training.kill()
        training.wait()
    out = copy_run(finished_run, tmp_path)
    run_files = lambda: {p.name: p.read_bytes() for p in out.iterdir()  # noqa: E731
                         if p.is_file() and p.name != ".hpvit-train.lock"}
    before = run_files()
    evaluated = train(out, weights, env=env, extra=["--eval-only"])
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert run_files() == before  # the training run's config.yaml, log.txt... as they were
    assert {"config.yaml", "log.txt", "coco_instances_results.json"} <= {
        p.name for p in (out / "inference").iterdir()}
    read_only = tmp_path / "read_only"
    shutil.copytree(finished_run, read_only)
    cmd = in_namespace('mount --bind "$D" "$D" && mount -o remount,bind,ro "$D"', read_only,
                       train_cmd(read_only, weights, extra=["--eval-only"]))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert (f"train.output_dir {read_only} is not writable (Read-only file system)"
            in one_error_line(proc.stderr))


def wait_for_log(out, proc, text, timeout=240):
    import time

    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        log = out / "log.txt"
        if log.exists() and text in log.read_text():
            return
        time.sleep(0.05)
    raise AssertionError(f"no {text!r} in {out}/log.txt within {timeout}s (exit {proc.poll()})")


def test_case03_group_sigterm_during_evaluation_saves_and_resumes(tmp_path, env):  # noqa: F811
    import signal

    from test_operations import LONG

    out = tmp_path / "run"
    long_test_set = "[" + ",".join(["hpvit_shapes_val_mini"] * 40) + "]"  # 160 images
    evaluating = ["train.eval_period=2", "dataloader.test.num_workers=1",
                  f"dataloader.test.dataset.names={long_test_set}",
                  "dataloader.evaluator.dataset_name=hpvit_shapes_val_mini"]
    proc = subprocess.Popen(train_cmd(out, *LONG, *evaluating), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    wait_for_log(out, proc, "Start inference on 160 batches")
    os.killpg(proc.pid, signal.SIGTERM)  # as timeout, scancel and kill -- -PGID do
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "Traceback" not in err and "killed by signal" not in err, err[-3000:]
    assert (out / "last_checkpoint").read_text() == "model_0000001.pth"
    assert "Evaluation stopped: saved model_0000001.pth at iteration 1" in (out / "log.txt").read_text()
    resumed = train(out, "train.max_iter=3", env=env, resume=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Starting training from iteration 2" in (out / "log.txt").read_text()
    assert load_checkpoint_file(str(out / "model_final.pth"))["iteration"] == 2


def test_a_second_signal_stops_a_long_evaluation_at_once(tmp_path):
    """Smaller item: a second Ctrl-C was ignored through a long evaluation (here one without
    batches to stop between, as pycocotools' accumulate)."""
    import signal
    import threading
    import time

    from detectron2.engine import SimpleTrainer, hooks

    from hpvit_d2.engine.hooks import SaveOnSignal

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward(self, batch):
            return {"loss": self.w.sum()}

    def long_evaluation():
        deadline = time.time() + 120
        while time.time() < deadline:
            time.sleep(0.01)
        return {}

    model = Model()
    trainer = SimpleTrainer(model, iter(range(100)), torch.optim.SGD(model.parameters(), lr=0.1))
    stop = SaveOnSignal(HPViTCheckpointer(model, str(tmp_path), trainer=trainer))
    trainer.register_hooks([stop, hooks.EvalHook(2, lambda: stop.evaluation(long_evaluation))])
    timers = [threading.Timer(t, os.kill, (os.getpid(), signal.SIGINT)) for t in (1.0, 1.5)]
    start = time.time()
    try:
        for timer in timers:
            timer.start()
        with pytest.raises(SystemExit) as stopped:
            trainer.train(0, 10)
    finally:
        stop.restore_handlers()
    assert stopped.value.code == 128 + signal.SIGINT and time.time() - start < 30
    assert load_checkpoint_file(str(tmp_path / "model_0000001.pth"))["iteration"] == 1


def test_case08_full_disk_during_the_final_evaluation_is_one_line(tmp_path, env):  # noqa: F811
    from test_operations import in_namespace

    out, results = tmp_path / "run", tmp_path / "results"
    results.mkdir()
    # The evaluation's results go to a 4 KB disk; the checkpoints to train.output_dir.
    cmd = in_namespace('mount -t tmpfs -o size=4k tmpfs "$D"', results,
                       train_cmd(out, "train.max_iter=1", f"dataloader.evaluator.output_dir={results}"))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    error = single_error(proc.stderr)
    assert error.startswith(f"error: No space left on device: cannot write the evaluation's "
                            f"results to {results} (nothing written there)"), error
    assert error.endswith(f"the checkpoint is saved: --eval-only "
                          f"train.init_checkpoint={out}/model_final.pth evaluates it"), error
    left = proc.stdout.strip().splitlines()[-1].split(":", 1)[1].split()
    assert left == [], left  # no truncated instances_predictions.pth, no temporary file
    assert load_checkpoint_file(str(out / "model_final.pth"))["iteration"] == 0


def png_declaring(path, width, height):
    """A PNG whose header declares width x height (no pixel data): what Pillow reads first."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    return path


def test_case06_an_image_pillow_refuses_is_skipped_by_the_demo(tmp_path, capsys):
    from PIL import Image

    from hpvit_d2.cli.demo import main as demo_main
    from hpvit_d2.data.images import BadImageError, read_exif_orientation, read_image_size

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (64, 48), (90, 20, 20)).save(photos / "a.png")
    bomb = png_declaring(photos / "b.png", 20000, 20000)  # above Pillow's decompression-bomb limit
    with pytest.raises(BadImageError, match=r"image '.*b\.png' is too large for Pillow"):
        read_image_size(str(bomb))
    assert read_exif_orientation(str(bomb)) == 1
    code = run_command(demo_main, ["--config-file", TINY, "--input", str(photos), "--output",
                                   str(tmp_path / "vis")])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err, err[-3000:]
    assert f"skipping {bomb}: not a readable image (Image size (400000000 pixels) exceeds" in err
    assert (tmp_path / "vis" / "a.png").exists() and (tmp_path / "vis" / "predictions.json").exists()


def coco_data(tmp_path, change):
    """``--register-coco`` of a small COCO json (test_cli.write_coco) after ``change(data)``:
    (dataset name, json path)."""
    import json
    import uuid

    from test_cli import write_coco

    json_file, images = write_coco(tmp_path / "coco")
    data = json.loads(open(json_file).read())
    change(data)
    with open(json_file, "w") as f:
        json.dump(data, f)
    return f"mine_{uuid.uuid4().hex[:8]}", json_file, images


@pytest.mark.parametrize("case", ["mixed", "duplicated"])
def test_case10_category_ids_mixed_or_duplicated_are_refused(tmp_path, capsys, case):
    from hpvit_d2.cli.train import main as train_main

    def change(data):
        if case == "mixed":
            data["categories"][0]["id"] = "3"  # and 7
        else:
            data["categories"].append({"id": 7, "name": "again"})

    name, json_file, images = coco_data(tmp_path, change)
    code = run_command(train_main, ["--config-file", TINY, "--register-coco", name, json_file,
                                    images, f"train.output_dir={tmp_path / 'run'}",
                                    f"dataloader.train.dataset.names={name}",
                                    f"dataloader.test.dataset.names={name}"])
    assert code == 2
    error = one_error_line(capsys.readouterr().err)
    if case == "mixed":
        assert error == (f"error: {json_file}: categories[0] has id '3', a string: COCO category "
                         "ids are whole numbers; write 3 without quotes (and so in the "
                         "annotations' category_id)")
    else:
        assert error == (f"error: {json_file}: category id 7 is given twice in 'categories' "
                         "('thing7' and 'again'): give each category its own id (and its "
                         "annotations that category_id)")


def load_mine(tmp_path, change, caplog=None):
    import logging

    from hpvit_d2.data.build import get_dataset_dicts
    from hpvit_d2.data.datasets import register_coco_json

    name, json_file, images = coco_data(tmp_path, change)
    register_coco_json(name, json_file, images)
    with caplog.at_level(logging.WARNING) if caplog is not None else contextlib.nullcontext():
        return name, json_file, get_dataset_dicts(name, require_masks=True)


def test_image_sizes_written_as_strings_are_named(tmp_path):
    from hpvit_d2.data.datasets import DatasetFormatError

    def change(data):
        data["images"][2]["height"] = "64"

    with pytest.raises(DatasetFormatError) as refused:
        load_mine(tmp_path, change)
    assert str(refused.value).endswith(
        "image '2.png' (image_id 3) has height '64', a string: image sizes are numbers; "
        "write 64 without quotes")


def test_an_image_id_of_another_type_is_named_as_such(tmp_path):
    from hpvit_d2.data.datasets import DatasetFormatError

    def change(data):
        data["images"][0]["id"] = "1"  # its annotation says 1

    with pytest.raises(DatasetFormatError, match=r"images\[0\] has id '1', a string, where other "
                                                 r"images have whole numbers: COCO image ids are "
                                                 r"whole numbers; write 1 without quotes"):
        load_mine(tmp_path, change)


def test_negative_size_boxes_and_annotations_on_unknown_images_are_counted(tmp_path, caplog):
    def change(data):
        data["annotations"][0]["bbox"][2] = -5
        data["annotations"][1]["image_id"] = 99

    name, json_file, _ = load_mine(tmp_path, change, caplog)
    text = caplog.text
    assert "boxes with a negative width or height dropped: 1" in text
    assert "zero-area boxes" not in text
    assert (f"Dataset '{name}': {json_file} has 1 annotation(s) on image ids not in 'images' "
            "(first: annotation id 2, image_id 99): not trained on nor evaluated") in text


def test_a_coco_json_is_read_once_by_the_checks_and_once_by_the_loader(tmp_path, env):  # noqa: F811
    """Smaller item: a 200 MB json was parsed three times at the start of training (3.0 GB
    peak). Registered twice (the train command's main and worker processes do) and loaded, it
    is now read twice: once for this project's checks, once by detectron2's loader."""
    import sys

    from test_cli import write_coco

    json_file, images = write_coco(tmp_path / "coco")
    script = "\n".join([
        "import sys",
        "reads = []",
        f"sys.addaudithook(lambda event, args: event == 'open' and args[0] == {json_file!r} "
        "and reads.append(1))",
        "from hpvit_d2.data.build import get_dataset_dicts",
        "from hpvit_d2.data.datasets import register_coco_json",
        f"register_coco_json('mine', {json_file!r}, {images!r})",
        f"register_coco_json('mine', {json_file!r}, {images!r})",
        "get_dataset_dicts('mine', require_masks=True)",
        "print('reads', len(reads))",
    ])
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[-2:] == ["reads", "2"], proc.stdout


def test_case12_an_output_path_of_the_wrong_kind_is_refused_up_front(tmp_path, capsys):
    import timm
    from PIL import Image

    from hpvit_d2.cli.demo import main as demo_main
    from hpvit_d2.cli.export import main as export_main

    vit = timm.create_model("vit_base_patch16_224", pretrained=False, embed_dim=128, depth=6,
                            num_heads=4)
    source = tmp_path / "vit.pth"
    torch.save(vit.state_dict(), source)
    folder = tmp_path / "adir"
    folder.mkdir()
    assert run_command(convert_main, [str(source), f"{folder}/", "--config-file", TINY]) == 2
    assert one_error_line(capsys.readouterr().err) == (
        f"error: DST {folder}/: is a directory, and the command writes a file there: give a "
        f"file name, e.g. {folder}/init.pth")
    assert os.listdir(folder) == []
    image = tmp_path / "a.png"
    Image.new("RGB", (64, 64)).save(image)
    existing = tmp_path / "existing_file"
    existing.write_text("mine")
    from hpvit_d2.cli.browse import main as browse_main

    for main, argv in ((export_main, ["--weights", str(source), "--sample-image", str(image)]),
                       (demo_main, ["--input", str(image)]), (browse_main, [])):
        assert run_command(main, ["--config-file", TINY, *argv, "--output", str(existing)]) == 2
        assert one_error_line(capsys.readouterr().err) == (
            f"error: --output {existing}: is a file, and the command writes a directory there: "
            "give a directory (created if needed)")
    assert existing.read_text() == "mine"


def test_export_tolerance_must_be_a_finite_number(tmp_path, capsys):
    from hpvit_d2.cli.export import main as export_main

    with pytest.raises(SystemExit) as refused:
        run_command(export_main, ["--config-file", TINY, "--weights", "w.pth", "--sample-image",
                                  "a.png", "--output", str(tmp_path), "--tolerance", "nan"])
    assert refused.value.code == 2
    assert "argument --tolerance: nan is not a finite number >= 0" in capsys.readouterr().err


def test_demo_names_the_directory_entries_it_skips(tmp_path, capsys):
    from PIL import Image

    from hpvit_d2.cli.demo import collect_inputs

    photos = tmp_path / "photos"
    (photos / "more").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(photos / "a.png")
    Image.new("RGB", (8, 8)).save(photos / "b.gif")
    files, missing = collect_inputs([str(photos)])
    assert files == [str(photos / "a.png")] and missing == []
    assert (f"skipping 2 entries of {photos} that are not images (.jpg, .jpeg, .png, .bmp, .tif, "
            ".tiff, .webp; folders are not searched): b.gif, more/") in capsys.readouterr().err


def test_the_lock_error_names_the_process_holding_it(tmp_path):
    """Smaller item: the error named the pid written in the lock file, not the holder's."""
    import sys

    from hpvit_d2.engine.output_dir import LOCK_NAME, OutputDirInUseError, claim_output_dir

    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_NAME).write_text("1\n")  # e.g. written in another pid namespace
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a'); "
         "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(120)",
         str(out / LOCK_NAME)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputDirInUseError, match=rf"in use by a running training "
                                                      rf"\(pid {holder.pid}\)"):
            claim_output_dir(str(out))
    finally:
        holder.kill()
        holder.wait()


def _init_after_a_while(worker_id):
    import time

    from hpvit_d2.engine.hooks import ignore_stop_signals

    time.sleep(0.5)  # the group's signal arrives before the worker ignores it
    ignore_stop_signals(worker_id)


def test_case03_loader_workers_starting_when_the_signal_comes_survive_it():
    """The group's signal can reach loader workers between their start and their
    worker_init_fn (case 3's test sends it as an evaluation starts its workers): they are born
    with the stop signals blocked, and the training process gets the signal."""
    import signal

    from torch.utils.data import DataLoader

    from hpvit_d2.engine.hooks import stop_signals_blocked

    received = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        loader = DataLoader(list(range(8)), num_workers=2, worker_init_fn=_init_after_a_while)
        with stop_signals_blocked():
            batches = iter(loader)
            for worker in batches._workers:
                os.kill(worker.pid, signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)
        assert len(list(batches)) == 8 and received == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)
