"""
The lab's shipped off-the-shelf checkpoints: small MAEs of the tiny configs' ViT (width 128, 6
blocks, 4 heads, patch 16), one per input resolution (``mae_tiny_shapes`` at 256 px for detection
and segmentation, ``mae_tiny_shapes64`` at 64 px for classification; ``hpvit_lab.pretrain``
says why), each pre-trained once on unlabelled shapes images by ``make pretrain`` and
kept in the repository as a Hugging Face ``ViTMAEForPreTraining`` directory (``config.json`` +
``model.safetensors``), with its recipe, the command that made it, its loss summary and the
sha256 of its files (``SHA256SUMS``). Every miniature starts from it as the paper's users start
from a downloaded MAE: it is converted with the public converter
(``python -m hpvit_d2.convert DIR OUT --config-file CONFIG --strict``).
"""
import hashlib
import sys
from pathlib import Path
from typing import Dict

from . import LAB_ROOT
from .runs import CommandJob

__all__ = ["SHIPPED_MAE", "SUMS_FILE", "conversion_job", "sha256_of", "shipped_checkpoint",
           "verify_checkpoint", "write_sums"]

SHIPPED_MAE = Path(LAB_ROOT) / "checkpoints" / "mae_tiny_shapes"
SUMS_FILE = "SHA256SUMS"
HASHED_FILES = ("config.json", "model.safetensors")


def shipped_checkpoint(name: str) -> Path:
    """The directory of the shipped checkpoint ``name`` (``mae_tiny_shapes``,
    ``mae_tiny_shapes64``)."""
    return SHIPPED_MAE.parent / name


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_sums(directory: Path) -> Dict[str, str]:
    """Write ``SHA256SUMS`` (``sha256sum``'s format) for the checkpoint's files; returns them."""
    sums = {name: sha256_of(directory / name) for name in HASHED_FILES}
    (directory / SUMS_FILE).write_text("".join(f"{h}  {n}\n" for n, h in sums.items()))
    return sums


def verify_checkpoint(directory: Path = SHIPPED_MAE) -> Dict[str, str]:
    """
    Check the checkpoint's files against its ``SHA256SUMS`` (``sha256sum -c`` does the same).
    Returns the sums. Raises ConfigError naming the file that is missing or changed, and how to
    get it back.
    """
    from hpvit_d2.overrides import ConfigError

    directory = Path(directory)
    again = (f"--checkpoint {directory.name}" if directory.parent == SHIPPED_MAE.parent
             else f"--output {directory}")
    fix = (f"restore it (git checkout -- {directory}) or make it again with `python -m "
           f"hpvit_lab.pretrain {again}` (`make pretrain` remakes mae_tiny_shapes), which "
           "rewrites the sums")
    try:
        lines = (directory / SUMS_FILE).read_text().splitlines()
    except OSError:
        raise ConfigError(f"{directory / SUMS_FILE}: missing; {fix}") from None
    expected = {}
    for line in filter(None, lines):
        digest, _, name = line.partition("  ")
        expected[name.strip()] = digest.strip()
    for name in HASHED_FILES:
        path = directory / name
        if name not in expected:
            raise ConfigError(f"{directory / SUMS_FILE}: no sum for {name}; {fix}")
        if not path.is_file():
            raise ConfigError(f"{path}: missing; {fix}")
        found = sha256_of(path)
        if found != expected[name]:
            raise ConfigError(f"{path}: sha256 {found[:12]}... differs from {SUMS_FILE}'s "
                              f"{expected[name][:12]}...; {fix}")
    return expected


def conversion_job(source: Path, config: str, out: Path, log_dir: Path, name: str = "",
                   needs: tuple = ()) -> CommandJob:
    """The public converter as a lane job: ``python -m hpvit_d2.convert SOURCE OUT
    --config-file CONFIG --strict``; its output is ``out``."""
    name = name or f"convert_{Path(config).stem}"
    return CommandJob(name, [sys.executable, "-m", "hpvit_d2.convert", str(source), str(out),
                             "--config-file", config, "--strict"],
                      log_dir / f"{name}.log", needs=needs, cost=10.0, outputs=(out,))
