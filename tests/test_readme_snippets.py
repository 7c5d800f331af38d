"""The README's inference snippet runs verbatim after the step it names (make demo, which writes
output/demo/hpvit_tiny/model_final.pth), in a fresh process, and prints no third-party warning."""
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def _section_code(title: str, language: str):
    readme = (ROOT / "README.md").read_text()
    section = readme.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", section, re.S)


def test_the_inference_snippet_runs_verbatim_after_make_demo_and_is_quiet(tmp_path):
    (snippet,) = _section_code("Inference on your image", "python")
    assert 'weights="output/demo/hpvit_tiny/model_final.pth"' in snippet and '"photo.jpg"' in snippet
    # The step it names: make demo trains the tiny config into output/demo/hpvit_tiny (here for
    # two iterations of the mini split, through the same training entry).
    env = dict(os.environ, HPVIT_DATA=str(tmp_path / "data"), OMP_NUM_THREADS="1")
    env.pop("PYTHONWARNINGS", None)  # as a user's shell has it
    train = subprocess.run(
        [sys.executable, str(ROOT / "projects" / "HPViT" / "train_net.py"), "--config-file",
         "mask_rcnn_hpvit_tiny.py", "train.output_dir=output/demo/hpvit_tiny", "train.max_iter=2",
         "dataloader.train.dataset.names=hpvit_shapes_train_mini", "train.eval_period=0",
         "dataloader.train.num_workers=0"], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=600)
    assert train.returncode == 0, train.stderr[-3000:]
    assert (tmp_path / "output/demo/hpvit_tiny/model_final.pth").is_file()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (180, 240, 3), dtype=np.uint8)).save(
        tmp_path / "photo.jpg")

    proc = subprocess.run([sys.executable, "-c", snippet + "\nprint('instances:', len(instances))"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"^instances: \d+$", proc.stdout, re.M)
    noise = [line for line in proc.stderr.splitlines()
             if "Warning" in line or re.match(r"^[WE]\d{4} ", line)]
    assert noise == [], "\n".join(noise)
