"""
detectron2's stock `tools/lazyconfig_train_net.py` trains and evaluates our tiny config unchanged.

Two real processes on the generated shapes dataset (mini splits, under a tmp $HPVIT_DATA): one
training iteration (which saves model_final.pth and evaluates), then --eval-only from that file.
Only sizes are overridden on the command line.
"""
import ast
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SMALL = [
    "dataloader.train.dataset.names=hpvit_shapes_train_mini",
    "dataloader.test.dataset.names=hpvit_shapes_val_mini",
    "dataloader.train.total_batch_size=2",
    "dataloader.train.num_workers=0",
    "dataloader.test.num_workers=0",
    "model.roi_heads.box_predictor.test_topk_per_image=10",
]


def _run(args, tmp_path):
    env = dict(os.environ, HPVIT_DATA=str(tmp_path / "data"), OMP_NUM_THREADS="1",
               PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        [sys.executable, "-m", "tools.lazyconfig_train_net",
         "--config-file", "configs/mask_rcnn_hpvit_tiny.py", *args, *SMALL],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout, proc.stdout + proc.stderr


def _copypaste(log: str) -> dict:
    """{task: {metric: value}} from detectron2's `copypaste:` lines (print_csv_format)."""
    lines = re.findall(r"copypaste: (.*)", log)
    results = {}
    for i, line in enumerate(lines):
        if line.startswith("Task: "):
            names, values = lines[i + 1].split(","), lines[i + 2].split(",")
            results[line[len("Task: "):]] = dict(zip(names, map(float, values)))
    return results


def test_stock_tool_trains_one_iteration_then_evaluates_the_checkpoint(tmp_path):
    out = tmp_path / "out"
    _, train_log = _run(["train.max_iter=1", f"train.output_dir={out}"], tmp_path)
    assert re.search(r"iter: 0 .*total_loss: [0-9.]+", train_log), train_log[-2000:]
    checkpoint = out / "model_final.pth"
    assert checkpoint.is_file() and (out / "last_checkpoint").read_text() == "model_final.pth"

    eval_out, eval_log = _run(["--eval-only", f"train.init_checkpoint={checkpoint}",
                     f"train.output_dir={tmp_path / 'eval'}"], tmp_path)
    assert f"Loading from {checkpoint}" in eval_log
    # the stock tool prints the metrics dict as the last line of stdout
    printed = eval_out.strip().splitlines()[-1]
    match = re.fullmatch(r"OrderedDict\((.*)\)", printed)
    assert match, printed
    metrics = dict(ast.literal_eval(re.sub(r"\bnan\b", "None", match.group(1))))
    for task in ("bbox", "segm"):
        assert {"AP", "AP50", "AP75", "APs", "APm", "APl"} <= set(metrics[task])
        assert {"AP-circle", "AP-rectangle", "AP-triangle", "AP-star"} <= set(metrics[task])
    assert (tmp_path / "eval" / "inference" / "coco_instances_results.json").is_file()
    # the saved checkpoint is the trained model: same predictions, same AP as the end of training
    trained, evaluated = _copypaste(train_log), _copypaste(eval_log)
    assert set(trained) == set(evaluated) == {"bbox", "segm"}
    assert trained == evaluated
