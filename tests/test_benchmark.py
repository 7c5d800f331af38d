"""The benchmark harness runs end to end on tiny models and writes every output, every column."""
import contextlib
import io
import json
import re

import pytest
from PIL import Image

from hpvit_d2 import cpu_memory
from hpvit_lab.blocks import command_line
from hpvit_lab import bench as benchmark
from hpvit_d2.overrides import ConfigError

# One thread: tiny models are all small ops, which two threads on a busy 2-core machine slow 100x.
ARGS = ["--scale", "tiny", "--threads", "1", "--sizes", "64", "--train-sizes", "64",
        "--runs", "2", "--warmup", "1",
        "--models", "vit", "plain", "--maskrcnn-models", "vit", "hpvit-1191-avg",
        # Training rows (each its own process: seconds of imports each): the trunk's baseline here,
        # HPViT's trunk in the train curve's test, the plan of every variant in test_train_rows_*.
        "--train-models", "vit", "--train-maskrcnn-models", "vit", "hpvit-1191-avg",
        # the configs' mixed precision (train.amp.enabled: autocast bf16 on the CPU); fp32 rows
        # run the same step with autocast off (the train curve's test)
        "--train-precisions", "amp"]


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert benchmark.main(ARGS + ["--out", str(out)]) == 0
    return out, printed.getvalue()


def header_line(out) -> str:
    return (out / "benchmark.md").read_text().splitlines()[0]


def _table(md: str):
    lines = [line for line in md.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    return header, rows


def test_writes_json_markdown_and_png(bench_run):
    out, printed = bench_run
    md = (out / "benchmark.md").read_text()
    assert md in printed  # the table is printed too
    header, rows = _table(md)
    assert header == list(benchmark.COLUMNS)
    assert all(len(r) == len(header) for r in rows)
    planned = {(r[0], r[2]) for r in rows}
    # --scale tiny rows say they are not ViT-B
    assert planned == {
        ("backbone", "detectron2 ViT-tiny trunk (ViTDet)"), ("backbone", "HPViT-tiny trunk plain mode"),
        ("maskrcnn", "detectron2 ViT-tiny trunk (ViTDet)"), ("maskrcnn", "HPViT-tiny trunk (1,1,9,1) avg"),
        ("train", "detectron2 ViT-tiny trunk (ViTDet) + AMP bf16"),
        # the whole detector, its trunk checkpointed as the config sets (HPViT-B's: every stage)
        ("train-maskrcnn", "detectron2 ViT-tiny trunk (ViTDet) + AMP bf16"),
        ("train-maskrcnn", "HPViT-tiny trunk (1,1,9,1) avg + act ckpt + AMP bf16"),
    }
    with Image.open(out / "benchmark.png") as im:
        assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > 100
    results = json.loads((out / "benchmark.json").read_text())
    assert results["threads"] >= 1 and results["roofline_gmacs"] > 0
    assert len(results["roofline_samples"]) == 2 * 2  # one per round, two timed groups
    assert "threads" in md.splitlines()[0] and "roofline" in md.splitlines()[0]
    # the allocator policy the rows were measured under is recorded and printed
    assert results["allocator"] == cpu_memory.retained() != "not requested"
    assert f"CPU memory: {results['allocator']} (train rows: system allocator" in md.splitlines()[0]
    for row in results["rows"]:  # inference rows keep freed memory, train rows do not (as training)
        assert row["allocator"].startswith(
            "system" if row["part"].startswith("train") else "glibc"), row
    # the second roofline: oneDNN's linear on the same product, and each row's share of it
    assert results["onednn_roofline_gmacs"] > 0
    assert f"oneDNN's linear on the same product {results['onednn_roofline_gmacs']:.1f} GMAC/s" \
        in md.splitlines()[0]
    # the kernel HPViT's projections ran on at inference, chosen on this machine, and why
    linear = results["cpu_linear"]
    assert linear["kernel"] in ("onednn", "mkl") and linear["reason"].startswith("auto: ")
    kernel = "oneDNN's linear" if linear["kernel"] == "onednn" else "F.linear (MKL)"
    assert f"HPViT's projections at inference: {kernel} ({linear['reason']})" in md.splitlines()[0]


def test_train_rows_are_planned_for_every_setting_and_precision():
    """The trunk: without checkpointing, with it in every stage (not detectron2's: fairscale) and,
    for the hierarchy, in the 1/4 and 1/8 stages; the detector as its config sets it (HPViT-B's
    config: every stage); each in fp32 and under the configs' mixed precision."""
    args = benchmark._parser().parse_args(["--parts", "train", "train-maskrcnn"])
    rows = benchmark.plan_rows(args)
    planned = [(r.part, r.model, r.checkpoint, r.amp) for r in rows]
    trunk = [("vit", False), ("plain", False), ("plain", True), ("hpvit-2262-conv", False),
             ("hpvit-2262-conv", True), ("hpvit-2262-conv", [0, 1])]
    detector = [("vit", False), ("hpvit-2262-conv", True)]
    expected = [("train", model, checkpoint, amp) for model in ("vit", "plain", "hpvit-2262-conv")
                for amp in (False, True) for m, checkpoint in trunk if m == model]
    expected += [("train-maskrcnn", model, checkpoint, amp) for model, checkpoint in detector
                 for amp in (False, True)]
    assert planned == expected
    assert {r.size for r in rows} == {512}
    assert rows[-1].name == "HPViT-B (2,2,6,2) conv + act ckpt + AMP bf16"


def test_every_inference_row_has_every_number(bench_run):
    out, _ = bench_run
    header, rows = _table((out / "benchmark.md").read_text())
    col = {name: i for i, name in enumerate(header)}
    bf16 = json.loads((out / "benchmark.json").read_text())["bf16_roofline_gmacs"]
    assert bf16 > 0 and f"the same product in bf16 {bf16:.1f} GMAC/s" in header_line(out)
    for r in rows:
        assert float(r[col["params (M)"]]) > 0
        assert float(r[col["peak mem (MB)"]]) > float(r[col["pass peak (MB)"]]) > 0
        assert r[col["mem vs d2"]].endswith("x")
        if r[0].startswith("train"):  # timed too, in the row's own process: one step after the
            # measured one; the trunk's rows with its forward FLOPs (GMAC/s: 3x them per step)
            assert float(r[col["median (s)"]]) > 0 and r[col["speed vs d2"]].endswith("x")
            if r[0] == "train":
                assert float(r[col["GFLOPs"]]) > 0 and float(r[col["GMAC/s"]]) > 0
                assert float(r[col["GMAC/s"]]) == pytest.approx(
                    3 * float(r[col["GFLOPs"]]) / float(r[col["median (s)"]]), rel=0.05)
                # an AMP row is judged against the bf16 product, not the fp32 one (issue 36),
                # and has no share of oneDNN's fp32 inference kernel
                assert r[2].endswith("+ AMP bf16") and r[col["% oneDNN roofline"]] == "-"
                assert float(r[col["% roofline"]].rstrip("%")) == pytest.approx(
                    100 * float(r[col["GMAC/s"]]) / bf16, abs=1.0)
                assert r[col["GMAC/s vs d2"]] == "1.00x"
            if r[2].startswith("detectron2"):
                assert r[col["speed vs d2"]] == "1.00x" and r[col["mem vs d2"]] == "1.00x"
            continue
        for name in ("GFLOPs", "median (s)", "img/s", "GMAC/s"):
            assert float(r[col[name]]) > 0, (name, r)
        low, high = (float(v) for v in r[col["spread (s)"]].split("-"))
        assert low <= float(r[col["median (s)"]]) <= high
        assert r[col["% roofline"]].endswith("%") and r[col["speed vs d2"]].endswith("x")
        assert r[col["% oneDNN roofline"]].endswith("%")
        # per FLOP against detectron2's row of the same part and size: the speed ratio times the
        # FLOPs ratio
        base = next(b for b in rows if b[:2] == r[:2] and b[2].startswith("detectron2"))
        assert float(r[col["GMAC/s vs d2"]].rstrip("x")) == pytest.approx(
            float(r[col["speed vs d2"]].rstrip("x")) * float(r[col["GFLOPs"]])
            / float(base[col["GFLOPs"]]), rel=0.05, abs=0.02)
        if r[2].startswith("detectron2"):
            assert r[col["speed vs d2"]] == "1.00x" == r[col["GMAC/s vs d2"]]


def test_json_keeps_raw_measurements(bench_run):
    out, _ = bench_run
    results = json.loads((out / "benchmark.json").read_text())
    for row in results["rows"]:
        assert len(row["times"]) == (1 if row["part"].startswith("train") else 2)  # --train-runs, --runs
        assert row["peak_method"]
    gflops = {(r["part"], r["model"]): r["gflops"] for r in results["rows"]}
    # The whole detector does more work than its backbone.
    assert gflops[("maskrcnn", "vit")] > gflops[("backbone", "vit")]


@pytest.mark.parametrize("argv, message", [
    (["--amp"], "--device cuda"),
    (["--runs", "0"], "--runs"),
])
def test_bad_arguments_are_named(argv, message):
    with pytest.raises(ConfigError, match=message):
        benchmark.main(argv)


def test_cuda_request_without_cuda_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(benchmark.torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="no CUDA device"):
        benchmark.main(["--device", "cuda", "--scale", "tiny", "--out", str(tmp_path)])


def test_cost_curve_plots_time_memory_and_flops(tmp_path):
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert benchmark.main(["--curve", "--scale", "tiny", "--threads", "1", "--warmup", "0",
                               "--sizes", "64", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "curve.json").read_text())
    sizes = {(r["model"], r["size"]) for r in results["rows"]}
    assert sizes == {(m, s) for m in ("vit", "hpvit-2262-conv", "hpvit-1191-conv") for s in (64,)}
    assert all(r["gflops"] > 0 and r["times"] for r in results["rows"])
    with Image.open(tmp_path / "curve.png") as image:
        assert image.format == "PNG" and image.width > 1000


def test_training_cost_curve_runs_each_trunk_as_its_config_sets_it(tmp_path):
    """--curve --parts train: the training step of ViTDet's and HPViT's trunks at each size, HPViT
    checkpointed as the B config sets it (every stage), timed, with memory and forward FLOPs."""
    (tmp_path / "README.md").write_text("# t\n<!-- begin: bench-train-curve -->\nold\n"
                                        "<!-- end: bench-train-curve -->\n")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert benchmark.main(["--curve", "--parts", "train", "--scale", "tiny", "--threads", "1",
                               "--sizes", "64", "--train-precisions", "fp32",
                               "--out", str(tmp_path), "--readme", str(tmp_path / "README.md")]) == 0
    results = json.loads((tmp_path / "train-curve.json").read_text())
    rows = {(r["model"], r["size"], str(r["checkpoint"]), r["amp"]) for r in results["rows"]}
    assert rows == {("vit", 64, "False", False), ("hpvit-2262-conv", 64, "True", False)}
    assert all(r["part"] == "train" and r["gflops"] > 0 and r["times"] and r["pass_peak_mb"] > 0
               for r in results["rows"])
    readme = (tmp_path / "README.md").read_text()
    assert "conv + act ckpt |" in readme and "old" not in readme
    with Image.open(tmp_path / "train-curve.png") as image:
        assert image.format == "PNG" and image.width > 1000


def test_training_profile_names_the_ops_of_one_step_as_the_config_trains(tmp_path):
    """--profile MODEL --parts train: torch.profiler over one training step of the trunk as its
    config checkpoints it, in the first precision asked (amp: bf16 autocast), tabled by op into
    the model's own 'bench-train-profile-MODEL' block; a detector part is refused by name."""
    block = "bench-train-profile-hpvit-2262-conv"
    (tmp_path / "p.md").write_text(f"<!-- begin: {block} -->\nold\n<!-- end: {block} -->\n")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert benchmark.main(["--profile", "hpvit-2262-conv", "--parts", "train", "--scale", "tiny",
                               "--threads", "1", "--train-sizes", "64", "--train-precisions",
                               "amp", "--readme", str(tmp_path / "p.md")]) == 0
    text = (tmp_path / "p.md").read_text()
    assert "old" not in text and "one training step of HPViT-tiny trunk" in text
    assert "act ckpt + AMP bf16 at 64x64" in text  # the B config recomputes every stage
    shares = [int(m) for m in re.findall(r"\| (\d+)% \|", text)]
    assert len(shares) == 17 and " other ops |" in text  # 16 ops and the rest: all of the step
    assert 100 - len(shares) <= sum(shares) <= 100 + len(shares)
    assert "`aten::" in text and "backward" in text.lower()  # the step's backward ops are in it
    with pytest.raises(ConfigError, match="--parts train"):
        benchmark.main(["--profile", "vit", "--parts", "train-maskrcnn", "--scale", "tiny"])


def test_readme_caption_names_the_command_without_the_readme_flag():
    """The README caption is the command to type again: ``--readme FILE`` is left out, value too."""
    line = command_line("hpvit_lab.bench", ["--sizes", "512", "--readme", "README.md",
                                               "--runs", "2", "--readme=other.md"])
    assert line == "python -m hpvit_lab.bench --sizes 512 --runs 2"


def test_attention_variants_agree_and_are_tabled(capsys):
    """bench_attention at a tiny size: every variant in its own process computes what HPViT's
    chunked SDPA computes (flex_attention's score_mod included), and the table has one row each."""
    from hpvit_lab import bench_attention

    assert bench_attention.main(["--sides", "6", "--heads", "2", "--dim", "8", "--runs", "1",
                                 "--threads", "1", "--variants", "sdpa-chunked",
                                 "sdpa-whole-bias", "flex-eager"]) == 0
    out = capsys.readouterr().out
    rows = [line.split("|") for line in out.splitlines() if line.startswith("| sdpa") or
            line.startswith("| flex")]
    assert [r[1].strip() for r in rows] == ["sdpa-chunked", "sdpa-whole-bias", "flex-eager"]
    for r in rows:
        assert r[2].strip() == "6x6" and float(r[7]) < 1e-5, r
    assert "one global attention with decomposed relative positions" in out
