"""
The wheel is the product (issue 24). Built from a clean copy of the checkout, it holds the library,
its configs and the six user commands (not the lab), and declares every runtime requirement with
the pins of requirements.txt. Installed in a fresh venv, as the README's "Installation" says
(detectron2 first, then the wheel), its commands convert, train, draw and export on the mini
data from a directory outside the checkout.

Nothing is downloaded: the fresh venv sees the packages of the venv running the tests (torch,
detectron2 and the rest, through a ``.pth`` file over a folder of symbolic links to them, without
this checkout's own ``hpvit_d2``), and ``pip install --no-index`` must find every requirement the
wheel declares among them: a pin they do not satisfy fails the install.
"""
import email.parser
import json
import os
import re
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = ["hpvit-browse", "hpvit-classify", "hpvit-convert", "hpvit-demo", "hpvit-export",
            "hpvit-train"]
# The README's commands (its "Installation" block holds them verbatim): build in a checkout after
# make setup, install in the user's venv after torch and detectron2.
BUILD = "python -m pip wheel --no-deps --no-build-isolation -w dist ."
INSTALL = "pip install dist/hpvit_d2-{version}-py3-none-any.whl"
TINY = "mask_rcnn_hpvit_tiny.py"


def _pip_env(**extra):
    """pip with no configuration of this machine (its extra indexes, find-links, constraints) and
    no index: only what is already installed can satisfy a requirement."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") and k != "PYTHONPATH"}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1",
               **extra)
    return env


def _version() -> str:
    return re.search(r'__version__ = "([^"]+)"', (ROOT / "hpvit_d2" / "__init__.py").read_text()).group(1)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built by the README's command from a copy of the checkout's sources (a checkout's
    own build/ folder may hold files deleted since; the copy has none, and the checkout is left
    untouched)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("setup.py", "requirements.txt", "MANIFEST.in", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "hpvit_d2", src / "hpvit_d2",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    build = [sys.executable, *BUILD.split()[1:]]
    proc = subprocess.run(build, cwd=src, env=_pip_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    (path,) = (src / "dist").glob("hpvit_d2-*.whl")
    assert path.name == f"hpvit_d2-{_version()}-py3-none-any.whl"
    return path


def _requirements_txt():
    """requirements.txt as (runtime lines, lab/extra lines): its sections end at '# lab' and
    '# tests' (setup.py reads the first as install_requires)."""
    text = (ROOT / "requirements.txt").read_text()
    runtime, rest = text.split("\n# lab", 1)
    extras = rest.split("\n# tests", 1)[0]

    def lines(section):
        return [Requirement(line.strip()) for line in section.splitlines()
                if line.strip() and not line.strip().startswith("#")]

    return lines(runtime), lines("\n".join(extras.splitlines()[1:]))


def test_the_wheel_declares_requirements_txt_pins(wheel):
    archive = zipfile.ZipFile(wheel)
    names = archive.namelist()
    info = f"hpvit_d2-{_version()}.dist-info"
    metadata = email.parser.Parser().parsestr(archive.read(f"{info}/METADATA").decode())
    declared = [Requirement(r) for r in metadata.get_all("Requires-Dist")]
    plain = {canonicalize_name(r.name): r.specifier for r in declared if r.marker is None}
    optional = {canonicalize_name(r.name): (r.specifier, str(r.marker)) for r in declared if r.marker}
    runtime, extras = _requirements_txt()
    # Every runtime line, with the same pin; nothing else but torch and torchvision.
    for req in runtime:
        assert plain.get(canonicalize_name(req.name)) == req.specifier, (str(req), plain)
    assert set(plain) - {canonicalize_name(r.name) for r in runtime} == {"torch", "torchvision"}
    # torch/torchvision: installed by make setup (TORCH_SPEC, not requirements.txt); its default
    # satisfies what the wheel declares.
    spec = re.search(r'TORCH_SPEC=\$\{TORCH_SPEC:-"([^"]+)"\}',
                     (ROOT / "scripts" / "setup_env.sh").read_text()).group(1)
    for pinned in spec.split():
        req = Requirement(pinned)
        (version,) = [s.version for s in req.specifier]
        assert plain[canonicalize_name(req.name)].contains(version), (pinned, plain[req.name])
    # The lab section: the wheel's extras, with the same pins (transformers only in "lab").
    for req in extras:
        specifier, marker = optional[canonicalize_name(req.name)]
        assert specifier == req.specifier and marker.startswith("extra =="), (str(req), marker)
    assert optional["transformers"][1] == 'extra == "lab"'
    assert not {"pytest", "pytest-xdist"} & (set(plain) | set(optional))
    # The library, its configs and the user commands; not the lab.
    assert "hpvit_d2/configs/mask_rcnn_hpvit_b.py" in names
    assert "hpvit_d2/configs/yacs/mask_rcnn_hpvit_b.yaml" in names
    assert not any(n.startswith(("hpvit_lab", "projects", "tests")) for n in names)
    scripts = archive.read(f"{info}/entry_points.txt").decode()
    assert sorted(re.findall(r"^(hpvit-[\w-]+) =", scripts, re.M)) == COMMANDS


def test_the_readme_installs_as_this_file_does():
    section = (ROOT / "README.md").read_text().split("## Installation\n", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```bash\n(.*?)```", section.split("###")[0], re.S)
    commands = [line.split("#")[0].strip() for line in block.splitlines()]
    assert any(c.endswith(BUILD) for c in commands), commands
    assert INSTALL.format(version=_version()) in commands, commands
    # detectron2 (and torch) before the wheel
    first = {name: next(i for i, c in enumerate(commands) if name in c)
             for name in ("torch==", "sal-detectron2", "python -m installer", "dist/hpvit_d2-")}
    assert first["torch=="] < first["sal-detectron2"] < first["python -m installer"] < first["dist/hpvit_d2-"]


def _fresh_venv(path: Path) -> Path:
    """A venv at ``path`` that sees this venv's packages but not this checkout's hpvit_d2, nor
    the lab's ``transformers`` nor the ``onnx`` extra (the wheel must work without them): per site-packages folder here, a
    folder of symbolic links to its entries (the hpvit_d2 ones left out: the editable install's
    metadata and finder), added by a .pth file as a site directory (its own .pth files are
    processed, as in the original). Returns the venv's python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120)
    python = path / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    lines = []
    for k, original in enumerate(p for p in site.getsitepackages() if os.path.isdir(p)):
        shared = path.parent / f"shared-site-{k}"
        shared.mkdir()
        for entry in os.listdir(original):
            name = entry.lower().replace("-", "_")
            if "hpvit_d2" not in name and not name.startswith(("transformers", "onnx")):
                os.symlink(os.path.join(original, entry), shared / entry)
        lines.append(f"import site; site.addsitedir({str(shared)!r})")
    Path(purelib, "_shared_site_packages.pth").write_text("\n".join(lines) + "\n")
    return python


def _run(args, cwd, env, timeout=600):
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{args}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc


def test_the_wheel_in_a_fresh_venv_converts_trains_draws_and_exports(wheel, tmp_path):
    venv = tmp_path / "venv"
    python = _fresh_venv(venv)
    install = INSTALL.format(version=_version()).split()
    _run([python, "-m", *install[:-1], wheel], cwd=tmp_path, env=_pip_env())

    work = tmp_path / "work"  # outside the checkout
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONWARNINGS")}
    env.update(HPVIT_DATA=str(tmp_path / "data"), OMP_NUM_THREADS="1")
    probe = _run([python, "-c", "import json, sys, hpvit_d2; print(hpvit_d2.__file__); "
                                "print(json.dumps(sys.path))"], cwd=work, env=env)
    lab_only = subprocess.run([python, "-c", "import transformers"], cwd=work, env=env,
                              capture_output=True, text=True, timeout=120)
    assert "No module named 'transformers'" in lab_only.stderr  # the commands run without it
    package, path = probe.stdout.splitlines()
    assert package.startswith(str(venv)), package  # the wheel's, not the checkout's
    assert not [p for p in json.loads(path) if p and Path(p).resolve().is_relative_to(ROOT)], path
    bin_dir = venv / "bin"
    assert sorted(p.name for p in bin_dir.glob("hpvit-*")) == COMMANDS
    for command in COMMANDS:
        helped = _run([bin_dir / command, "--help"], cwd=work, env=env, timeout=120)
        assert helped.stdout.startswith(f"usage: {command} "), helped.stdout[:200]

    # A plain ViT of the tiny config's geometry (width 128, 6 blocks, patch 16), saved as timm does.
    import timm

    torch.manual_seed(0)
    vit = timm.create_model("vit_base_patch16_224", img_size=64, embed_dim=128, depth=6, num_heads=4,
                            num_classes=0)
    torch.save(vit.state_dict(), work / "vit.pth")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(
        work / "photo.png")

    converted = _run([bin_dir / "hpvit-convert", "vit.pth", "init.pth", "--config-file", TINY],
                     cwd=work, env=env)
    assert converted.stdout.startswith("wrote ") and (work / "init.pth").is_file()
    trained = _run([bin_dir / "hpvit-train", "--config-file", TINY, "train.init_checkpoint=init.pth",
                    "train.output_dir=run", "train.max_iter=1", "train.eval_period=0",
                    "dataloader.train.dataset.names=hpvit_shapes_train_mini",
                    "dataloader.test.dataset.names=hpvit_shapes_val_mini",
                    "dataloader.train.num_workers=0", "dataloader.test.num_workers=0"], cwd=work, env=env)
    assert (work / "run" / "model_final.pth").is_file()
    # The config was found by name in the installed wheel (detectron2's setup logs its path).
    shipped = re.search(r"Contents of args\.config_file=(\S+):", trained.stdout + trained.stderr)
    assert shipped and shipped.group(1).startswith(str(venv)), trained.stdout[-2000:]
    _run([bin_dir / "hpvit-demo", "--config-file", TINY, "--input", "photo.png", "--output", "vis",
          "--weights", "run/model_final.pth"], cwd=work, env=env)
    assert sorted(os.listdir(work / "vis")) == ["photo.png", "predictions.json"]
    _run([bin_dir / "hpvit-export", "--config-file", TINY, "--weights", "run/model_final.pth",
          "--sample-image", "photo.png", "--output", "exported"], cwd=work, env=env)
    report = json.loads((work / "exported" / "export_report.json").read_text())
    assert report["passed"] and (work / "exported" / "model.ts").is_file()
    # Without the onnx extra, an ONNX export is one line naming it, exit 3, before any work.
    onnx = subprocess.run([bin_dir / "hpvit-export", "--config-file", TINY, "--weights",
                           "run/model_final.pth", "--sample-image", "photo.png", "--format", "onnx",
                           "--output", "exported_onnx"], cwd=work, env=env, capture_output=True,
                          text=True, timeout=120)
    assert onnx.returncode == 3, onnx.stderr[-3000:]
    assert onnx.stderr.strip().splitlines() == [
        "error: --format onnx needs onnx and onnxruntime, not installed: pip install "
        "'hpvit_d2[onnx]' (make setup installs it in a checkout)"]
    assert not (work / "exported_onnx").exists()
