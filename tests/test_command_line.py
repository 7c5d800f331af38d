"""One command-line convention for every user command: --config-file NAME, positional KEY=VALUE
overrides with --opts as an alias, flags before or after the overrides, usage naming the program,
"did you mean" for a misspelt config name, --help before torch is imported. Parsing only:
nothing is built."""
import json
import os
import re
import shlex
import subprocess
import sys

import pytest

from hpvit_d2.cli import browse, classify, common, convert, demo, export, train
from hpvit_d2.model_zoo import ConfigNotFoundError, get_config_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PARSERS = {
    "hpvit-train": train.argument_parser,
    "hpvit-demo": demo.argument_parser,
    "hpvit-export": export._parser,
    "hpvit-browse": browse._parser,
}
BASE = {
    "hpvit-train": ["--config-file", "mask_rcnn_hpvit_tiny.py"],
    "hpvit-demo": ["--config-file", "mask_rcnn_hpvit_tiny.py", "--input", "a.png", "--output", "out/"],
    "hpvit-export": ["--config-file", "mask_rcnn_hpvit_tiny.py", "--weights", "w.pth",
                     "--sample-image", "a.png", "--output", "out/"],
    "hpvit-browse": ["--config-file", "mask_rcnn_hpvit_tiny.py", "--output", "b/"],
}


@pytest.mark.parametrize("console", sorted(PARSERS))
def test_overrides_are_positional_or_opts_and_flags_go_anywhere(console, monkeypatch):
    monkeypatch.setattr(sys, "argv", [f"/venv/bin/{console}"])
    parser = PARSERS[console]()
    assert parser.format_usage().startswith(f"usage: {console} ")
    overrides = ["train.device=cpu", "train.max_iter=2"]
    orders = [
        [*BASE[console], *overrides],                     # flags first
        [*overrides, *BASE[console]],                     # overrides first
        [overrides[0], *BASE[console], overrides[1]],     # mixed
        [*BASE[console], "--opts", *overrides],           # detectron2's spelling
    ]
    for argv in orders:
        args = common.parse_command(parser, argv)
        assert args.opts == overrides or sorted(args.opts) == sorted(overrides), argv
        assert args.config_file == "mask_rcnn_hpvit_tiny.py"


def test_a_flag_after_the_overrides_is_a_flag():
    args = common.parse_command(train.argument_parser(),
                                ["--config-file", "x.py", "train.max_iter=2", "--eval-only"])
    assert args.eval_only and args.opts == ["train.max_iter=2"]
    args = common.parse_command(browse._parser(), ["--config-file", "x.py", "a.b=1", "--output", "b/"])
    assert args.output == "b/" and args.opts == ["a.b=1"]


# Every user command: its parser, and the flags of the one convention it has. hpvit-convert's
# output is its second argument (one file); hpvit-browse runs no model (no --device), nor does
# hpvit-convert (it loads on the CPU); hpvit-classify is timm's training script: its settings are
# flags and its model's arguments --model-kwargs KEY=VALUE, no LazyConfig (the README says so).
COMMANDS = {
    "hpvit-train": (train.argument_parser, {"--config-file", "--output", "--device", "opts"}),
    "hpvit-demo": (demo.argument_parser, {"--config-file", "--output", "--device", "opts"}),
    "hpvit-export": (export._parser, {"--config-file", "--output", "--device", "opts"}),
    "hpvit-browse": (browse._parser, {"--config-file", "--output", "opts"}),
    "hpvit-convert": (convert.argument_parser, {"--config-file", "opts"}),
    "hpvit-classify": (classify.argument_parser, {"--output", "--device"}),
}
CONVENTION = {"--config-file", "--output", "--device", "opts"}


@pytest.mark.parametrize("console", sorted(COMMANDS))
def test_one_convention_on_every_command(console):
    parser, has = COMMANDS[console]
    spellings = {s for action in parser()._actions for s in action.option_strings or [action.dest]}
    assert spellings & CONVENTION == has


def test_device_and_output_flags_are_the_overrides_they_stand_for():
    from hpvit_d2.model_zoo import get_config

    args = common.parse_command(train.argument_parser(), [
        "--config-file", "mask_rcnn_hpvit_b.py", "train.max_iter=2", "--device", "cpu",
        "--output", "out/run, 2=[b]"])
    assert args.opts[0] == "train.max_iter=2"
    cfg = get_config(args.config_file, args.opts)
    assert (cfg.train.device, cfg.train.output_dir, cfg.train.max_iter) == ("cpu", "out/run, 2=[b]", 2)
    demo_args = ["--config-file", "x.py", "--input", "a.png", "--output", "o", "--device", "cuda:1"]
    export_args = ["--config-file", "x.py", "--weights", "w.pth", "--sample-image", "a.png",
                   "--output", "o", "--device", "cuda:1"]
    for parser, argv in ((demo.argument_parser, demo_args), (export._parser, export_args)):
        assert common.parse_command(parser(), argv).opts == ["train.device='cuda:1'"]
    args = common.parse_command(browse._parser(), ["--config-file", "x.py", "--output-dir", "b/"])
    assert args.output == "b/"  # the former spelling still works
    # a yacs config: the same flags, as its keys
    args = common.parse_command(train.argument_parser(), [
        "--config-file", "configs/yacs/mask_rcnn_hpvit_b.yaml", "SOLVER.MAX_ITER", "2",
        "--device", "cpu", "--output", "out/y"])
    assert train._yacs_opts(args) == ["SOLVER.MAX_ITER", "2", "MODEL.DEVICE", "cpu", "OUTPUT_DIR", "out/y"]


def _help_examples(text: str):
    """The example command lines of a --help text, continuation lines joined."""
    examples, current = [], None
    for line in text.splitlines():
        stripped = line.strip()
        if current is not None:
            current += " " + stripped.rstrip("\\").strip()
            if not stripped.endswith("\\"):
                examples.append(current)
                current = None
        elif stripped.startswith(("python projects/HPViT/", "python -m hpvit_d2", "hpvit-")):
            if stripped.endswith("\\"):
                current = stripped.rstrip("\\").strip()
            else:
                examples.append(stripped)
    return examples


@pytest.mark.parametrize("console", sorted(COMMANDS))
def test_the_examples_in_help_are_valid_command_lines(console, monkeypatch):
    """Each example in a command's --help is laid out as a user types it (a backslash ends a line
    that continues; a lost one runs the lines together) and parses with the command's flags."""
    monkeypatch.setattr(sys, "argv", [console])
    parser = COMMANDS[console][0]()
    text = parser.format_help()
    examples = _help_examples(text)
    assert examples, text[:500]
    for example in examples:
        assert not re.search(r"\S {3,}-", example), example  # two lines run together
        argv = shlex.split(example)
        argv = argv[2:] if argv[0] == "python" and argv[1].endswith(".py") else \
            argv[3:] if argv[0] == "python" else argv[1:]
        argv = [a for a in argv if a != "..."]
        if console == "hpvit-classify":
            parser.parse_args(argv)
        else:
            common.parse_command(parser, argv)


def test_demo_takes_an_override_written_after_its_inputs(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    args = common.parse_command(demo.argument_parser(), [
        "--config-file", "x.py", "--output", "o", "--input", str(tmp_path / "a.png"), "train.device=cpu"])
    demo._overrides_out_of_inputs(args)
    assert args.input == [str(tmp_path / "a.png")] and args.opts == ["train.device=cpu"]


def test_a_script_keeps_its_own_name_in_usage(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["projects/HPViT/train_net.py"])
    assert train.argument_parser().format_usage().startswith("usage: train_net.py ")
    monkeypatch.setattr(sys, "argv", [train.__file__])  # python -m hpvit_d2.cli.train
    assert common.program_name("hpvit-train") == "hpvit-train"


def test_converter_takes_config_file_and_overrides():
    parser = convert.argument_parser()
    args = common.parse_command(parser, ["a.pth", "b.pth", "model.backbone.bottom_up.embed_dim=192",
                                         "--config-file", "mask_rcnn_hpvit_b.py", "--strict"])
    assert (args.src, args.dst, args.config, args.strict) == ("a.pth", "b.pth", "mask_rcnn_hpvit_b.py", True)
    assert args.opts == ["model.backbone.bottom_up.embed_dim=192"]
    args = common.parse_command(parser, ["a.pth", "b.pth", "--config", "x.py", "--opts", "k=1"])
    assert (args.config, args.opts) == ("x.py", ["k=1"])
    assert common.parse_command(parser, ["a.pth", "b.pth"]).config is None  # picked from the file


def test_a_misspelt_config_name_gets_did_you_mean():
    with pytest.raises(ConfigNotFoundError, match=r"did you mean mask_rcnn_hpvit_tiny\.py"):
        get_config_file("mask_rcnn_hpvit_tinny.py")
    with pytest.raises(ConfigNotFoundError, match="shipped: "):
        get_config_file("something_else_entirely.yaml")


def test_help_names_the_console_command():
    proc = subprocess.run([sys.executable, "-m", "hpvit_d2.cli.convert", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: hpvit-convert ")


def _console_scripts():
    """setup.py's console scripts: {name: (module, function)}."""
    setup = open(os.path.join(ROOT, "setup.py")).read()
    found = re.findall(r'"(hpvit-[\w-]+)=([\w.]+):(\w+)"', setup)
    assert len(found) == 6, found
    return {name: (module, function) for name, module, function in found}


# What a console script's --help runs, in a fresh interpreter: the entry function setup.py names,
# with argv as the console script sets it; then the modules that were imported, beyond the standard
# library, the package itself and the interpreter's own hooks (_distutils_hack, __editable__...).
_HELP_PROBE = """
import json, sys
sys.argv = [{name!r}, "--help"]
from {module} import {function} as entry
try:
    entry()
    code = None
except SystemExit as e:
    code = e.code
imported = {{m.split(".")[0] for m in sys.modules}}
extra = sorted(imported - set(sys.stdlib_module_names) - {{"hpvit_d2", "__main__", "sitecustomize",
                                                           "usercustomize"}}
               - {{m for m in imported if m.startswith("_")}})
print(json.dumps({{"code": code, "third_party": extra}}), file=sys.stderr)
"""


@pytest.mark.parametrize("console", sorted(_console_scripts()))
def test_help_answers_before_torch_is_imported(console, tmp_path):
    """Issue 24: every console script's --help answers in under 2 s. Its robust form: --help
    exits 0, shows usage with the console's name, and imports nothing beyond the standard
    library (no torch, timm, detectron2, numpy: torch alone takes ~3 s to import here)."""
    module, function = _console_scripts()[console]
    probe = _HELP_PROBE.format(name=console, module=module, function=function)
    proc = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stderr.strip().splitlines()[-1])
    assert report == {"code": 0, "third_party": []}, report
    assert proc.stdout.startswith(f"usage: {console} "), proc.stdout[:200]


def test_the_package_import_is_light():
    """``import hpvit_d2`` imports neither torch nor timm nor detectron2 (the commands' --help
    relies on it); the timm names are registered by ``import hpvit_d2.timm_models``."""
    probe = ("import sys, hpvit_d2; print(sorted(m for m in ('torch', 'timm', 'detectron2', "
             "'numpy') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr[-2000:]


def test_train_takes_detectron2s_defaults(monkeypatch):
    """hpvit-train writes detectron2's defaults out (its parser is built without importing
    detectron2): they are default_argument_parser's."""
    from detectron2.engine import default_argument_parser

    d2 = vars(default_argument_parser().parse_args([]))
    assert train.detectron2_defaults() == {k: d2[k] for k in train.detectron2_defaults()}
    args = common.parse_command(train.argument_parser(), ["--config-file", "x.py"])
    assert {k: getattr(args, k) for k in train.detectron2_defaults()} == train.detectron2_defaults()


@pytest.mark.parametrize("show", ["0", "1"], ids=["default", "HPVIT_SHOW_WARNINGS=1"])
def test_no_cuda_runtime_line_on_a_cpu_machine_with_a_cuda_toolkit(show, tmp_path):
    """torch logs 'No CUDA runtime is found, using CUDA_HOME=...' on detectron2's import wherever
    a toolkit is installed and no GPU is: silenced by quiet_warnings (what every command calls at
    start), back with HPVIT_SHOW_WARNINGS=1."""
    env = dict(os.environ, CUDA_HOME=str(tmp_path), HPVIT_SHOW_WARNINGS=show, CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "-c", "import hpvit_d2; hpvit_d2.quiet_warnings(); "
                           "import torch.utils.cpp_extension"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert ("No CUDA runtime is found" in proc.stderr) == (show == "1"), proc.stderr
