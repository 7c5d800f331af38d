"""
The READMEs' shell commands as a new user types them: each in a fresh shell (``bash --norc``, an
environment with nothing but HOME, PATH and LANG) that has run only what README.md says to run
first, its ``. .venv/bin/activate`` line, in a directory laid out as the checkout, after
``make setup`` (the venv running these tests).

The demo command runs as it is written, on the files it names, made here as ``make demo`` and the
user would have them (the demo model's weights, random; photos). Every other command is checked: its program is found and its module or script answers ``--help``, every flag
it is given is one that ``--help`` lists, and its config loads with its ``KEY=VALUE`` overrides
(``make`` targets: ``make -n``). A broken command (not found, wrong module, wrong flag, wrong key)
fails here. README.md's Installation block is tests/test_wheel.py's: it builds and installs the
wheel in a fresh venv.

The test process's own import path is kept when it holds the checkout (a work tree testing its
code with another checkout's venv), and OMP_NUM_THREADS, which the suite sets per worker.
"""
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
READMES = ("README.md", "projects/HPViT/README.md")
NOT_HERE = {("README.md", "Installation")}  # tests/test_wheel.py runs it
ACTIVATE = ". .venv/bin/activate"
OVERRIDE = re.compile(r"^\+?[A-Za-z_][\w.]*=")
ASSIGNMENT = re.compile(r"^[A-Za-z_]\w*=")
DEMO_WEIGHTS = "output/demo/hpvit_tiny/model_final.pth"
# Run as written (the files it names are made by the fixture): the first command after make demo,
# cheap on the tiny model. The exports are checked here, and run by tests/test_cli.py.
RUN = ("python projects/HPViT/demo.py --config-file mask_rcnn_hpvit_tiny.py",)


def shell_commands(readme: str):
    """[(section title, tokens)] of every command in the ```bash blocks of ``readme``, lines joined
    over backslash continuations, comments dropped."""
    text = (ROOT / readme).read_text()
    found = []
    for section in re.split(r"\n## ", text):
        title = section.split("\n", 1)[0].strip("# ")
        for block in re.findall(r"```bash\n(.*?)```", section, re.S):
            for line in block.replace("\\\n", " ").splitlines():
                tokens = shlex.split(line, comments=True)
                if tokens:
                    found.append((title, tokens))
    return found


def _covered():
    return [(readme, title, tokens) for readme in READMES
            for title, tokens in shell_commands(readme) if (readme, title) not in NOT_HERE]


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    """A directory laid out as the checkout after make setup (its entries linked, ``.venv`` the
    venv running the tests), with the files the run commands name; and a fresh shell's env."""
    assert sys.prefix != sys.base_prefix, "the tests run in the venv make setup made"
    here = tmp_path_factory.mktemp("checkout")
    for entry in ROOT.iterdir():
        if entry.name not in (".venv", ".git", "output"):
            (here / entry.name).symlink_to(entry)
    (here / ".venv").symlink_to(sys.prefix)

    import torch
    from detectron2.config import instantiate

    from hpvit_d2.model_zoo import get_config

    torch.manual_seed(0)
    weights = here / DEMO_WEIGHTS
    weights.parent.mkdir(parents=True)
    torch.save({"model": instantiate(get_config("mask_rcnn_hpvit_tiny.py").model).state_dict()},
               weights)
    rng = np.random.default_rng(0)
    (here / "photos").mkdir()
    for name in ("photos/a.jpg", "photos/b.png", "one.jpg", "photo.jpg"):
        Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(here / name)

    home = tmp_path_factory.mktemp("home")
    env = {"HOME": str(home), "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
    if any(p and Path(p).resolve() == ROOT for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)):
        env["PYTHONPATH"] = str(ROOT)
    if "OMP_NUM_THREADS" in os.environ:
        env["OMP_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"]
    return here, env


def first_steps():
    """What README.md says to run in a new shell before its commands (``.``/``source`` lines)."""
    return [tokens for _, tokens in shell_commands("README.md") if tokens[0] in (".", "source")]


def fresh_shell(checkout, tokens, timeout=300) -> subprocess.CompletedProcess:
    """``tokens`` run in a new shell after README.md's first steps (and nothing else)."""
    here, env = checkout
    script = " && ".join(shlex.join(t) for t in [*first_steps(), tokens])
    return subprocess.run(["bash", "--noprofile", "--norc", "-c", script], cwd=here, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_readme_says_to_activate_first_and_the_commands_are_covered():
    commands = [" ".join(t) for t in (t for _, t in shell_commands("README.md"))]
    assert [" ".join(t) for t in first_steps()] == [ACTIVATE]
    assert commands.index(ACTIVATE) < min(i for i, c in enumerate(commands) if c.startswith(("python", "hpvit-")))
    covered = [" ".join(tokens) for _, _, tokens in _covered()]
    assert sum(c.startswith(RUN) for c in covered) == 1, covered
    for command in covered:
        assert not {"&&", "||", "|", ";"} & set(command.split()), command  # one command each


def _split(tokens):
    """(environment assignments, program tokens, arguments) of one command; a torchrun command's
    arguments start at its script."""
    k = 0
    while ASSIGNMENT.match(tokens[k]):
        k += 1
    assignments, rest = tokens[:k], tokens[k:]
    if rest[0] in ("python", "python3"):
        n = 3 if rest[1] == "-m" else 2
    elif rest[0] == "torchrun":
        n = next(i for i, t in enumerate(rest) if t.endswith(".py"))
    else:
        n = 1
    return assignments, rest[:n], rest[n:]


_HELP = {}  # (assignments, program) -> its --help, asked once per test session


def _help(checkout, assignments, program):
    key = (tuple(assignments), tuple(program))
    if key not in _HELP:
        proc = fresh_shell(checkout, [*assignments, *program, "--help"], timeout=180)
        assert proc.returncode == 0 and "usage:" in proc.stdout, \
            f"{shlex.join(program)} --help: {proc.returncode}\n{proc.stdout[-1500:]}{proc.stderr[-3000:]}"
        _HELP[key] = proc.stdout
    return _HELP[key]


def _check_flags(help_text, program, arguments):
    for flag in (a.split("=", 1)[0] for a in arguments if a.startswith("--")):
        assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text), \
            f"{shlex.join(program)}: no flag {flag} in its --help"


def check(checkout, tokens):
    """The command without running it: program, module or script, flags, config and overrides."""
    from hpvit_d2.model_zoo import get_config

    if tokens[0] == "make":
        proc = fresh_shell(checkout, ["make", "-n", *tokens[1:]])
        assert proc.returncode == 0, proc.stderr[-2000:]
        return
    if tokens[0] == "export":
        assert fresh_shell(checkout, tokens).returncode == 0
        return
    assignments, program, arguments = _split(tokens)
    if program[0] == "torchrun":  # its own flags, then its script's
        _check_flags(_help(checkout, assignments, program[:1]), program[:1], program[1:])
        program, arguments = ["python", arguments[0]], arguments[1:]
    _check_flags(_help(checkout, assignments, program), program, arguments)
    if "--config-file" in arguments and not program[-1].endswith("classify.py"):
        config = arguments[arguments.index("--config-file") + 1]
        path = ROOT / config if config.startswith("configs/") else config
        get_config(str(path), [a for a in arguments if OVERRIDE.match(a)])


@pytest.mark.parametrize("readme, title, tokens", _covered(),
                         ids=[f"{r.split('/')[0]}:{' '.join(t)[:60]}" for r, _, t in _covered()])
def test_readme_command_works_in_a_fresh_shell(checkout, readme, title, tokens):
    command = " ".join(tokens)
    if command == ACTIVATE:
        found = fresh_shell(checkout, ["command", "-v", "python"]).stdout.strip()
        assert found == os.path.join(sys.prefix, "bin", "python"), found
        return
    if not command.startswith(RUN):
        check(checkout, tokens)
        return
    proc = fresh_shell(checkout, tokens)
    assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    output = checkout[0] / tokens[tokens.index("--output") + 1]
    assert {p.name for p in output.iterdir()} == {"a.png", "b.png", "one.png", "predictions.json"}


def test_the_readme_says_what_the_demo_model_knows():
    """The make demo model's classes are the shapes data's, and the README's inference section
    names each of them before its first command."""
    from detectron2.data import MetadataCatalog

    import hpvit_d2.data  # noqa: F401  (registers the shapes datasets)
    from hpvit_d2.data.shapes import SHAPE_CLASSES
    from hpvit_d2.model_zoo import get_config

    cfg = get_config("mask_rcnn_hpvit_tiny.py")
    assert tuple(MetadataCatalog.get(cfg.dataloader.train.dataset.names).thing_classes) == SHAPE_CLASSES
    assert cfg.model.roi_heads.num_classes == len(SHAPE_CLASSES)
    intro = (ROOT / "README.md").read_text().split("## Inference on your image\n", 1)[1].split("```")[0]
    for name in SHAPE_CLASSES:
        assert name in intro, name
