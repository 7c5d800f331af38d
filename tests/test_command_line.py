"""One command-line convention for every user command: --config-file NAME, positional KEY=VALUE
overrides with --opts as an alias, flags before or after the overrides, usage naming the program,
"did you mean" for a misspelt config name. Parsing only: nothing is built."""
import subprocess
import sys

import pytest

from hpvit_d2.cli import browse, common, convert, demo, export, train
from hpvit_d2.model_zoo import ConfigNotFoundError, get_config_file

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
    "hpvit-browse": ["--config-file", "mask_rcnn_hpvit_tiny.py", "--output-dir", "b/"],
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
    args = common.parse_command(browse._parser(), ["--config-file", "x.py", "a.b=1", "--output-dir", "b/"])
    assert args.output_dir == "b/" and args.opts == ["a.b=1"]


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
