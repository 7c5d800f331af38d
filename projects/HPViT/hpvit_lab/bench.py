"""
Speed and memory of HPViT-B against detectron2's ViT-B / ViTDet-B, measured in one run.

    python projects/HPViT/benchmark.py [--sizes 512 1024] [--runs 3] [--threads 2] [--out DIR]

Models (``--models``): ``vit`` (detectron2's ``ViT``; in Mask R-CNN, ViTDet-B with
``SimpleFeaturePyramid``), ``plain`` (HPViT in plain mode with the same weights; in Mask R-CNN, the
same ViTDet with HPViT's attention), and ``hpvit-{2262,1191}-{conv,avg}`` (HPViT-B with
``stage_depths`` (2, 2, 6, 2) or (1, 1, 9, 1) and conv or average pooling; in Mask R-CNN, HPViT +
FPN). Every model is built from the project's configs (configs/mask_rcnn_{vitdet,hpvit}_b.py);
weights are shared where models share parameters (blocks, patch embedding, heads).

Parts (``--parts``): ``backbone`` (the ViT trunk alone, inference), ``maskrcnn`` (the whole
detector, inference, 100 detections per image), ``train`` (training steps of the trunk: forward
and backward, without activation checkpointing, with it in every stage, and for the hierarchies
in the 1/4 and 1/8 stages only) and ``train-maskrcnn`` (training steps of the whole detector on
synthetic instances, the trunk checkpointed as its config sets). Each training row runs in its
own fresh process on the system allocator: the peak memory of the first step, then
``--train-runs`` timed steps; in fp32 and/or under the configs' mixed precision
(``--train-precisions``: ``amp`` is what ``train.amp.enabled`` trains with, autocast bfloat16 on
the CPU as :class:`hpvit_d2.engine.AutocastForward` runs it). By default the backbone part has
every model but ``hpvit-1191-avg`` and the others fewer (see ``--help``), to keep the
default run short.

``--default-forward MODEL ...`` adds backbone rows of those models as built, without the CPU
inference step: the default forward a user's ``model(x)`` runs (HPViT's blocks banded at
inference, each projection on its shape's faster kernel), timed beside the stepped rows.

How it measures:
- latency: models of one (part, size) are timed in the same process, after ``--warmup`` passes
  each, in ``--runs`` rounds that alternate the order of the models; the matrix-multiply
  roofline (4096x768 @ 768x3072) is measured in every round too. Threads are fixed (printed).
- params, fvcore FLOPs (hpvit_lab.flops) and peak memory: in a fresh subprocess per row, so that
  nothing else lives in it. CPU: peak resident memory of the pass (the kernel's high-water mark,
  reset with /proc/self/clear_refs after the model is built), and the total process peak. CUDA:
  ``torch.cuda.max_memory_allocated``.
- GMAC/s = fvcore FLOPs (one multiply-add = one flop) / median latency; "GMAC/s vs d2" is that
  rate over the detectron2 baseline's of the same part, size and precision (training per FLOP);
  % of the roofline: ``torch.mm`` in fp32 (MKL on the CPU), and for the rows under bf16 autocast
  the same product in bf16 (their ceiling); on the CPU, the fp32 rows' % of oneDNN's linear on
  the same product (what HPViT's projections run at inference,
  :mod:`hpvit_d2.modeling.projection`).
- CPU memory: glibc keeps freed memory for reuse (``hpvit_d2.cpu_memory``) in the timing process
  and in the inference rows' subprocesses, for every model alike; ``--system-allocator`` measures
  without it. The train rows' memory is measured on the system allocator, as training runs.

Writes ``benchmark.json``, ``benchmark.md`` and ``benchmark.png`` to ``--out`` and prints the table.
"""
import argparse
import copy
import datetime
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

import torch

from hpvit_d2 import cpu_memory
from hpvit_d2.overrides import ConfigError
from hpvit_d2.cli.common import run as run_command
from .blocks import command_line, update_readme_block
from hpvit_d2.modeling.projection import CPU_LINEAR_ENV, CPU_LINEARS, choose_cpu_linear
from . import lab_env
from .variants import (SCALES, VARIANTS, build_model, config_act_checkpoint, projection_shapes,
                       share_weights)

__all__ = ["Row", "main", "matmul_roofline", "measure_row", "run"]

BASELINE = "vit"
CURVE_SIZES = (256, 512, 768, 1024, 1280, 1536)
PARTS = ("backbone", "maskrcnn", "train", "train-maskrcnn")
TRAIN_PARTS = ("train", "train-maskrcnn")
TRAIN_PRECISIONS = ("fp32", "amp")
ROOFLINE_SHAPE = (4096, 768, 3072)  # (M, K, N): a ViT-B MLP matmul on 4096 tokens

DEFAULT_BACKBONE_MODELS = ("vit", "plain", "hpvit-2262-conv", "hpvit-2262-avg", "hpvit-1191-conv")
DEFAULT_MASKRCNN_MODELS = ("vit", "plain", "hpvit-2262-conv")
DEFAULT_TRAIN_MODELS = ("vit", "plain", "hpvit-2262-conv")
DEFAULT_TRAIN_MASKRCNN_MODELS = ("vit", "hpvit-2262-conv")
# Synthetic instances per image of the train-maskrcnn rows (boxes and their masks).
TRAIN_INSTANCES = 8
COLUMNS = ("part", "size", "model", "params (M)", "GFLOPs", "median (s)", "spread (s)",
           "first pass (s)", "img/s",
           "speed vs d2", "GMAC/s", "GMAC/s vs d2", "% roofline", "% oneDNN roofline", "peak mem (MB)",
           "pass peak (MB)", "mem vs d2")


@dataclass
class Row:
    """One measured (part, size, model). Times in seconds, memory in MB, FLOPs in G."""

    part: str
    size: int
    model: str
    checkpoint: Union[bool, List[int]] = False  # activation checkpointing: all stages, or these
    compiled: bool = False
    default_forward: bool = False  # inference as built, without optimize_for_cpu_inference
    amp: bool = False  # autocast (bfloat16) as train.amp.enabled runs it: train rows
    params_m: Optional[float] = None
    gflops: Optional[float] = None
    times: List[float] = field(default_factory=list)
    peak_mb: Optional[float] = None
    pass_peak_mb: Optional[float] = None
    peak_method: str = ""
    first_pass_s: Optional[float] = None  # the first (warm-up) pass: compile time + a pass if compiled
    error: str = ""  # why this row could not be timed (e.g. torch.compile failed)
    allocator: str = ""  # the CPU memory policy its memory was measured under
    scale: str = "base"  # the trunk width (SCALES): "tiny" rows are not ViT-B and say so

    @property
    def name(self) -> str:
        label = VARIANTS[self.model]["label"]
        if self.scale != "base":
            label = label.replace("ViT-B", f"ViT-{self.scale} trunk")
        suffix = "" if not self.checkpoint else " + act ckpt" if self.checkpoint is True else \
            " + act ckpt " + ", ".join(f"1/{4 * 2**k}" for k in self.checkpoint)
        return (label + suffix + (" (compiled)" if self.compiled else "")
                + (" (default forward)" if self.default_forward else "")
                + (" + AMP bf16" if self.amp else ""))

    @property
    def key(self) -> str:
        return (f"{self.part}/{self.size}/{self.model}/{self.checkpoint}/{int(self.compiled)}"
                f"/{int(self.default_forward)}/{int(self.amp)}")


def make_inputs(part: str, size: int, batch: int, device: str):
    """Random images: a (B, 3, size, size) tensor, or detectron2's list of dicts for Mask R-CNN
    (for ``train-maskrcnn`` with ``instances``: TRAIN_INSTANCES boxes of random place and size,
    their masks the filled boxes)."""
    gen = torch.Generator().manual_seed(1)
    images = torch.rand(batch, 3, size, size, generator=gen) * 255
    if part == "maskrcnn":
        return [{"image": im.to(device), "height": size, "width": size} for im in images]
    if part == "train-maskrcnn":
        return [{"image": im.to(device), "height": size, "width": size,
                 "instances": _synthetic_instances(size, gen).to(device)} for im in images]
    return ((images - 114.0) / 57.0).to(device)


def _synthetic_instances(size: int, gen: torch.Generator):
    """TRAIN_INSTANCES boxes (XYXY, sides 1/16 to 1/2 of the image), class 0..9, filled masks."""
    from detectron2.structures import BitMasks, Boxes, Instances

    n = TRAIN_INSTANCES
    sides = (torch.rand(n, 2, generator=gen) * (0.5 - 1 / 16) + 1 / 16) * size
    corners = torch.rand(n, 2, generator=gen) * (size - sides)
    boxes = torch.cat([corners, corners + sides], dim=1).floor()
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    for mask, (x0, y0, x1, y1) in zip(masks, boxes.long().tolist()):
        mask[y0:y1, x0:x1] = True
    instances = Instances((size, size))
    instances.gt_boxes = Boxes(boxes)
    instances.gt_classes = torch.randint(0, 10, (n,), generator=gen)
    instances.gt_masks = BitMasks(masks)
    return instances


def make_step(model: torch.nn.Module, part: str, inputs, device: str, amp: bool,
              linear: Optional[str] = None, cpu_step: bool = True) -> Callable:
    """A function running one pass: inference (backbone, maskrcnn) or a training step (train,
    train-maskrcnn; ``amp``: autocast bfloat16 around the forward and the loss).
    Inference on the CPU runs the model as the predictor does, after
    ``optimize_for_cpu_inference`` (the allocator policy is this command's, set in ``main``;
    ``linear``: the projections' kernel, "onednn" or "mkl", None: as the predictor decides),
    or with ``cpu_step=False`` as built: the default forward a user's ``model(x)`` runs."""

    if part in TRAIN_PARTS:
        from detectron2.utils.events import EventStorage

        model.train()
        device_type = "cuda" if device.startswith("cuda") else "cpu"

        def step():  # autocast around the forward and the loss only, as the trainer does
            # (the detector's losses log into an EventStorage, as in the trainer)
            with EventStorage(0), torch.autocast(device_type, dtype=torch.bfloat16, enabled=amp):
                out = model(inputs)
                if part == "train":  # the trunk's features: the mean of their squares
                    loss = sum(v.float().square().mean() for v in out.values())
                else:  # the detector's losses
                    loss = sum(out.values())
            loss.backward()
            model.zero_grad(set_to_none=True)
    else:
        model.eval()
        if cpu_step and not device.startswith("cuda"):
            from hpvit_d2.modeling import optimize_for_cpu_inference

            optimize_for_cpu_inference(model, retain_freed_memory=False, linear=linear)

        def step():
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                model(inputs)
    return step


# ---------------------------------------------------------------------------- measurements
def _sync(device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_roofline(device: str = "cpu", repeats: int = 3, kernel: str = "mm",
                    dtype: torch.dtype = torch.float32) -> Optional[float]:
    """
    GMAC/s of a (4096x768) @ (768x3072) matrix product in ``dtype``: the median of ``repeats``.
    ``torch.bfloat16`` gives the ceiling of the AMP rows (autocast runs their matmuls in bf16).

    ``kernel``: "mm" (``torch.mm``: MKL on the CPU, cuBLAS on CUDA; the table's roofline) or
    "onednn" (the same product as a linear through oneDNN, what HPViT's projections run at CPU
    inference; None where that path does not exist).
    """
    m, k, n = ROOFLINE_SHAPE
    a = torch.randn(m, k, device=device, dtype=dtype)
    if kernel == "mm":
        b = torch.randn(k, n, device=device, dtype=dtype)
        out = torch.empty(m, n, device=device, dtype=dtype)

        def product():
            torch.mm(a, b, out=out)
    else:
        from hpvit_d2.modeling.projection import onednn_applies, token_linear

        linear = torch.nn.Linear(k, n, bias=False).to(device=device, dtype=dtype)
        with torch.no_grad():
            if not onednn_applies(a):
                return None

        def product():
            with torch.no_grad():
                token_linear(linear, a)
    product()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        product()
        _sync(device)
        times.append(time.perf_counter() - start)
    return m * k * n / statistics.median(times) / 1e9


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _status_kb(field_name: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def measure_row(spec: dict) -> dict:
    """
    In this (fresh) process: build the row's model, run one pass, and return params, the pass's
    peak memory and the process's peak (MB), and fvcore FLOPs (inference parts).
    """
    torch.set_num_threads(spec["threads"])
    device = spec["device"]
    model = build_model(spec["model"], spec["part"], spec["scale"], spec["size"],
                        spec["checkpoint"]).to(device)
    train = spec["part"] in TRAIN_PARTS
    inputs = make_inputs(spec["part"], spec["size"], spec["batch"], device)
    step = make_step(model, spec["part"], inputs, device, spec["amp"], spec.get("linear"),
                     spec.get("cpu_step", True))
    result = {"params_m": sum(p.numel() for p in model.parameters()) / 1e6,
              "allocator": cpu_memory.retained()}
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        step()
        torch.cuda.synchronize()
        first_s = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated()
        result.update(peak_mb=peak / 2**20, pass_peak_mb=(peak - base) / 2**20,
                      peak_method="torch.cuda.max_memory_allocated")
    else:
        reset = _reset_peak_rss()
        base_kb = _status_kb("VmRSS")
        start = time.perf_counter()
        step()
        first_s = time.perf_counter() - start
        if reset and base_kb is not None:
            peak_kb = _status_kb("VmHWM")
            result.update(peak_mb=peak_kb / 1024, pass_peak_mb=(peak_kb - base_kb) / 1024,
                          peak_method="VmHWM after clear_refs")
        else:
            peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            result.update(peak_mb=peak_kb / 1024, pass_peak_mb=None,
                          peak_method="ru_maxrss (process lifetime)")
    if train:  # the step above was the first (its time includes the allocator's first touch)
        result["first_pass_s"] = first_s
        # --train-runs 0: the measured step is the timed one (on the system allocator every
        # step maps its large tensors anew, the first one too)
        result["times"] = [] if spec.get("train_runs", 1) else [first_s]
        for _ in range(spec.get("train_runs", 1)):
            start = time.perf_counter()
            step()
            _sync(device)
            result["times"].append(time.perf_counter() - start)
    if not train or spec.get("count_flops"):  # last: it puts the model in eval mode
        result["gflops"] = _count_gflops(model, spec["part"], inputs) / 1e9
    return result


def _count_gflops(model: torch.nn.Module, part: str, inputs) -> float:
    from hpvit_lab.flops import count_detector_flops, count_flops

    model.eval()
    with torch.no_grad():
        analysis = count_detector_flops(model, inputs) if part == "maskrcnn" else count_flops(model, inputs)
        return float(analysis.total())


def _measure_in_subprocess(spec: dict) -> dict:
    env = lab_env(OMP_NUM_THREADS=str(spec["threads"]), PYTHONWARNINGS="ignore")
    if spec["part"] in TRAIN_PARTS:  # training (hpvit_d2.cli.train) runs on the system allocator
        env[cpu_memory.ENV_VAR] = "0"
    cmd = [sys.executable, "-m", "hpvit_lab.bench", "--measure-row", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        killed = " (killed: out of memory?)" if proc.returncode == -9 else ""
        raise RuntimeError(
            f"measuring {spec['part']}/{spec['size']}/{spec['model']} in a subprocess failed "
            f"(exit {proc.returncode}{killed}):\n{proc.stderr[-3000:]}"
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _time_rows(rows: List[Row], models: Dict[str, Callable], args, log) -> List[float]:
    """Warm up, then time every model once per round, alternating the order; returns the
    (torch.mm, oneDNN) rooflines measured in each round."""
    for row in list(rows):
        for k in range(max(1, args.warmup) if row.compiled else args.warmup):
            start = time.perf_counter()
            try:
                models[row.key]()
            except Exception as e:  # torch.compile's failures are reported, not fatal
                row.error = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
                log(f"  {row.name}: failed ({row.error})")
                rows.remove(row)
                break
            if k == 0:
                row.first_pass_s = time.perf_counter() - start
                if row.compiled:
                    log(f"  {row.name}: compiled and ran once in {row.first_pass_s:.1f} s")
    rooflines = []
    for r in range(args.runs):
        order = rows if r % 2 == 0 else rows[::-1]
        rooflines.append((matmul_roofline(args.device), matmul_roofline(args.device, kernel="onednn")))
        for row in order:
            _sync(args.device)
            start = time.perf_counter()
            models[row.key]()
            _sync(args.device)
            row.times.append(time.perf_counter() - start)
            log(f"  round {r + 1}/{args.runs} {row.name}: {row.times[-1]:.3f} s")
    return rooflines


# --------------------------------------------------------------------------------- the run
def plan_rows(args) -> List[Row]:
    """Every (part, size, model) the arguments ask for, in measuring order."""
    rows = []
    as_configured: Dict[str, object] = {}  # model -> its config's checkpointing, read once
    for part in args.parts:
        sizes = args.train_sizes if part in TRAIN_PARTS else args.sizes
        models = {"backbone": args.models, "maskrcnn": args.maskrcnn_models,
                  "train": args.train_models, "train-maskrcnn": args.train_maskrcnn_models}[part]
        for size in sizes:
            for model in models:
                row = partial(Row, part, size, model, scale=args.scale)
                if part == "train-maskrcnn" or (part == "train" and args.curve):
                    # the trunk checkpointed as the model's config sets it
                    if model not in as_configured:
                        as_configured[model] = config_act_checkpoint(model)
                    settings = [as_configured[model]]
                elif part == "train":
                    settings = [False]
                    if VARIANTS[model]["kind"] != "vit":  # detectron2's needs fairscale
                        settings.append(True)
                    if VARIANTS[model]["kind"] == "hpvit":  # the 1/4 and 1/8 stages only
                        settings.append([0, 1])
                if part in TRAIN_PARTS:
                    rows += [row(checkpoint=checkpoint, amp=precision == "amp")
                             for precision in args.train_precisions for checkpoint in settings]
                else:
                    rows.append(row())
                    if part == "backbone" and model in args.compile:
                        rows.append(row(compiled=True))
                    if part == "backbone" and model in args.default_forward:
                        rows.append(row(default_forward=True))
    return rows


def run(args, log=print) -> dict:
    """Measure everything ``args`` asks for; returns the JSON-able results."""
    torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available here; use --device cpu")
    rows = plan_rows(args)
    # One kernel for every inference row and its subprocess: decided here, once (the
    # predictor's own choice: --cpu-linear, else HPVIT_CPU_LINEAR, else timed on this machine).
    linear = None
    if not args.device.startswith("cuda") and any(r.part not in TRAIN_PARTS for r in rows):
        linear = choose_cpu_linear(projection_shapes(args.scale), args.cpu_linear)
        log(f"HPViT's projections at CPU inference: {_kernel_name(linear.kernel)} "
            f"({linear.reason})")
    log(f"threads: {torch.get_num_threads()} (torch.set_num_threads), device: {args.device}, "
        f"inference amp bf16: {args.amp}, train precisions: {' '.join(args.train_precisions)}, "
        f"runs: {args.runs}, warm-up: {args.warmup}, batch: {args.batch}")
    measured: Dict[tuple, Row] = {}
    for row in rows:
        twin = measured.get((row.part, row.size, row.model))
        if row.compiled:  # same module as the row before it: params and FLOPs carry over
            row.params_m, row.gflops = twin.params_m, twin.gflops
            continue
        train = row.part in TRAIN_PARTS
        spec = dict(model=row.model, part=row.part, size=row.size, checkpoint=row.checkpoint,
                    scale=args.scale, batch=args.batch, threads=args.threads, device=args.device,
                    amp=row.amp if train else args.amp, train_runs=args.train_runs,
                    linear=linear and linear.kernel, cpu_step=not row.default_forward,
                    # the trunk's forward FLOPs, once per (size, model) of the train part
                    count_flops=row.part == "train" and twin is None)
        log(f"memory/params/FLOPs (subprocess): {row.part} {row.size} {row.name}")
        try:
            result = _measure_in_subprocess(spec)
        except RuntimeError as e:
            if not train:
                raise
            # A training row that does not fit (the kernel's OOM killer: exit -9) or fails is
            # reported in the table, and the other rows are still measured.
            row.error = str(e).splitlines()[0]
            log(f"  {row.name}: {row.error}")
            continue
        for k, v in result.items():
            setattr(row, k, v)
        if twin is not None and row.gflops is None:
            row.gflops = twin.gflops
        measured.setdefault((row.part, row.size, row.model), row)

    rooflines: List[tuple] = []
    groups: Dict[tuple, List[Row]] = {}
    for row in rows:
        if row.part not in TRAIN_PARTS:
            groups.setdefault((row.part, row.size), []).append(row)
    for (part, size), group in groups.items():
        log(f"timing {part} at {size}x{size}")
        built = {}
        for row in group:
            if row.model not in built:
                built[row.model] = build_model(row.model, part, args.scale, size).to(args.device)
        share_weights(built, BASELINE if BASELINE in built else next(iter(built)))
        # copies taken before the CPU step changes the built models in place
        as_built = {row.key: copy.deepcopy(built[row.model]) for row in group if row.default_forward}
        inputs = make_inputs(part, size, args.batch, args.device)
        steps = {}
        for row in group:
            model = as_built.get(row.key, built[row.model])
            if row.compiled:
                model = torch.compile(copy.deepcopy(model))
            steps[row.key] = make_step(model, part, inputs, args.device, args.amp,
                                       linear and linear.kernel, not row.default_forward)
        rooflines += _time_rows(group, steps, args, log)
        del built, as_built, steps
        gc.collect()

    return {
        "date": datetime.date.today().isoformat(),
        "machine": _machine(args.device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": args.device,
        "amp_bf16": args.amp,
        "scale": args.scale,
        "batch": args.batch,
        "runs": args.runs,
        "warmup": args.warmup,
        "roofline_gmacs": (statistics.median(r[0] for r in rooflines) if rooflines
                           else matmul_roofline(args.device)),
        "roofline_samples": [r[0] for r in rooflines],
        "onednn_roofline_gmacs": _median_or_none([r[1] for r in rooflines] if rooflines else
                                                 [matmul_roofline(args.device, kernel="onednn")]),
        # the AMP rows' ceiling: the same product in bf16 (measured when a row runs under AMP)
        "bf16_roofline_gmacs": (matmul_roofline(args.device, repeats=5, dtype=torch.bfloat16)
                                if args.amp or any(r.amp for r in rows) else None),
        "allocator": cpu_memory.retained(),
        "cpu_linear": linear and linear._asdict(),
        "rows": [dict(asdict(r), name=r.name) for r in rows],
    }


def _median_or_none(values: Sequence[Optional[float]]) -> Optional[float]:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _machine(device: str) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    text = f"{cpu}, {os.cpu_count()} logical cores, {platform.system()} {platform.release()}"
    if device.startswith("cuda"):
        text += f", {torch.cuda.get_device_name()}"
    return text


# ------------------------------------------------------------------------------- reporting
def _fmt(value, digits=2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _fmt_g(value) -> str:
    """GFLOPs: one decimal, or three significant digits below 10."""
    if value is None:
        return "-"
    return f"{value:.1f}" if value >= 10 else f"{value:.3g}"


def table_rows(results: dict) -> List[List[str]]:
    """The table's cells, one list per row, in COLUMNS order."""
    rows = [Row(**{k: v for k, v in r.items() if k != "name"}) for r in results["rows"]]
    onednn = results.get("onednn_roofline_gmacs")
    base = {(r.part, r.size, r.amp): r for r in rows if r.model == BASELINE and not r.compiled}
    out = []
    for r in rows:
        median = statistics.median(r.times) if r.times else None
        b = base.get((r.part, r.size, r.amp))
        b_median = statistics.median(b.times) if b and b.times else None
        # a training step: forward and backward, 3x the forward's multiply-adds (recomputed
        # forwards of checkpointed stages not counted)
        work = r.gflops * (3 if r.part in TRAIN_PARTS else 1) if r.gflops else None
        gmacs = work / median if (work and median) else None
        speed = b_median / median if (b_median and median) else None
        # per FLOP: this row's GMAC/s over the baseline's (their forward FLOPs counted alike)
        per_flop = (speed * r.gflops / b.gflops if speed and r.gflops and b and b.gflops
                    else None)
        roofline = _roofline_of(results, r)
        # oneDNN's roofline is an fp32 inference kernel: not the ceiling of a bf16 row
        onednn_share = (100 * gmacs / onednn if gmacs and onednn and not _is_bf16(results, r)
                        else None)
        mem_ratio = (r.pass_peak_mb / b.pass_peak_mb
                     if b and r.pass_peak_mb and b.pass_peak_mb else None)
        out.append([
            r.part, str(r.size), r.name, _fmt(r.params_m, 1), _fmt_g(r.gflops),
            _fmt(median, 3),
            f"{min(r.times):.3f}-{max(r.times):.3f}" if r.times else "-",
            _fmt(r.first_pass_s, 1) if r.first_pass_s is not None else ("failed" if r.error else "-"),
            _fmt(results["batch"] / median if median else None, 2),
            _fmt(speed, 2) + ("x" if speed else ""),
            _fmt_g(gmacs),
            _fmt(per_flop, 2) + ("x" if per_flop else ""),
            _fmt(100 * gmacs / roofline if gmacs else None, 0) + ("%" if gmacs else ""),
            _fmt(onednn_share, 0) + ("%" if onednn_share else ""),
            _fmt(r.peak_mb, 0), _fmt(r.pass_peak_mb, 0),
            _fmt(mem_ratio, 2) + ("x" if mem_ratio else ""),
        ])
    return out


def _is_bf16(results: dict, row: Row) -> bool:
    """The row ran under bf16 autocast: a train row with AMP, or any inference row of a run
    with --amp."""
    return row.amp if row.part in TRAIN_PARTS else bool(results.get("amp_bf16"))


def _roofline_of(results: dict, row: Row) -> float:
    """The ceiling a row's GMAC/s is judged against: the bf16 product for bf16 rows (when the
    run measured it), else the fp32 one."""
    bf16 = results.get("bf16_roofline_gmacs")
    return bf16 if bf16 and _is_bf16(results, row) else results["roofline_gmacs"]


def _bf16_note(results: dict) -> str:
    rate = results.get("bf16_roofline_gmacs")
    return "" if rate is None else (f", the same product in bf16 {rate:.1f} GMAC/s (the "
                                    f"roofline of the bf16 rows)")


def _onednn_note(results: dict) -> str:
    rate = results.get("onednn_roofline_gmacs")
    return "" if rate is None else f", oneDNN's linear on the same product {rate:.1f} GMAC/s"


def _kernel_name(kernel: str) -> str:
    return "oneDNN's linear" if kernel == "onednn" else "F.linear (MKL)"


def _linear_note(results: dict) -> str:
    """The kernel HPViT's projections ran on in the inference rows, and how it was chosen."""
    linear = results.get("cpu_linear")
    return "" if not linear else (f"; HPViT's projections at inference: "
                                  f"{_kernel_name(linear['kernel'])} ({linear['reason']})")


def _allocator_note(results: dict) -> str:
    """Says so when the train rows' memory was measured on the system allocator (as training
    runs) while the run kept freed memory: read off the policy each row recorded."""
    kept = not results.get("allocator", "system").startswith("system")
    train_system = any(r["part"] in TRAIN_PARTS and r.get("allocator", "").startswith("system")
                       for r in results["rows"])
    return " (train rows: system allocator, as training runs)" if kept and train_system else ""


def markdown_table(results: dict) -> str:
    """A header line (machine, date, threads, roofline) and the markdown table."""
    head = (f"{results['date']}, {results['machine']}, torch {results['torch']}, "
            f"{results['threads']} threads, device {results['device']}"
            f"{' (AMP bf16)' if results['amp_bf16'] else ''}, batch {results['batch']}, "
            f"{results['runs']} runs after {results['warmup']} warm-up; matmul roofline "
            f"{results['roofline_gmacs']:.1f} GMAC/s (fp32 {ROOFLINE_SHAPE[0]}x{ROOFLINE_SHAPE[1]}"
            f" @ {ROOFLINE_SHAPE[1]}x{ROOFLINE_SHAPE[2]}, torch.mm){_bf16_note(results)}"
            f"{_onednn_note(results)}{_linear_note(results)}; CPU memory: "
            f"{results.get('allocator', 'system allocator')}{_allocator_note(results)}.")
    lines = [head, "", "| " + " | ".join(COLUMNS) + " |",
             "|" + "|".join("---" if i < 3 else "---:" for i in range(len(COLUMNS))) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in table_rows(results)]
    failed = [r for r in results["rows"] if r.get("error")]
    if failed:
        lines += [""] + [f"- {r['name']} at {r['size']}: {r['error']}" for r in failed]
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    """Bar chart: median latency (with min-max) per model, one panel per (part, size)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: Dict[str, List[dict]] = {}
    for r in results["rows"]:
        key = f"{r['part']} {r['size']}x{r['size']}"
        panels.setdefault(key, []).append(r)
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 1.2 + 0.45 * max(
        len(v) for v in panels.values()) * len(panels)), squeeze=False)
    for ax, (title, rs) in zip(axes[:, 0], panels.items()):
        timed = [r for r in rs if r["times"]]
        if timed:
            med = [statistics.median(r["times"]) for r in timed]
            err = [[m - min(r["times"]) for m, r in zip(med, timed)],
                   [max(r["times"]) - m for m, r in zip(med, timed)]]
            ax.barh([r["name"] for r in timed], med, xerr=err, color="tab:blue")
            ax.set_xlabel("latency (s), median and min-max")
        else:
            ax.barh([r["name"] for r in rs], [r["pass_peak_mb"] or 0 for r in rs],
                    color="tab:orange")
            ax.set_xlabel("peak memory of the step (MB)")
        ax.invert_yaxis()
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=7)
    fig.suptitle(f"{results['machine'][:60]}, {results['threads']} threads", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curve(results: dict, path: Path) -> None:
    """Time, pass peak memory and GFLOPs of each backbone against the input size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    part = results["rows"][0]["part"]
    rows = [r for r in results["rows"] if r["part"] == part]
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    time_title = "step time (s)" if part in TRAIN_PARTS else "median latency (s)"
    panels = ((time_title, lambda r: statistics.median(r["times"]) if r["times"] else None),
              ("pass peak memory (MB)", lambda r: r["pass_peak_mb"]),
              ("GFLOPs (fvcore)", lambda r: r["gflops"]))
    for ax, (title, value) in zip(axes, panels):
        for name in dict.fromkeys(r["name"] for r in rows):
            points = [(r["size"], value(r)) for r in rows if r["name"] == name and value(r) is not None]
            if points:
                ax.plot(*zip(*points), marker="o", label=name)
        ax.set(title=title, xlabel="input size (square)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_outputs(results: dict, out_dir: Path, name: str = "benchmark", curve: bool = False) -> str:
    """Write NAME.json, NAME.md, NAME.png into ``out_dir``; return the markdown."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(results, indent=1))
    table = markdown_table(results)
    (out_dir / f"{name}.md").write_text(table)
    (plot_curve if curve else plot)(results, out_dir / f"{name}.png")
    return table


# -------------------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=None,
                   help="square input sizes for the backbone and maskrcnn parts (default 512 1024; "
                        "with --curve, the curve's sizes)")
    p.add_argument("--train-sizes", type=int, nargs="+", default=[512],
                   help="input sizes of the training-step rows")
    p.add_argument("--train-runs", type=int, default=1,
                   help="timed training steps per train row, after the first (whose memory is "
                        "measured); in the row's own fresh process; 0: the first step's time")
    p.add_argument("--models", nargs="+", default=list(DEFAULT_BACKBONE_MODELS),
                   choices=list(VARIANTS), help="models of the backbone part")
    p.add_argument("--maskrcnn-models", nargs="+", default=list(DEFAULT_MASKRCNN_MODELS),
                   choices=list(VARIANTS), help="models of the maskrcnn part")
    p.add_argument("--train-models", nargs="+", default=list(DEFAULT_TRAIN_MODELS),
                   choices=list(VARIANTS),
                   help="models of the train part (HPViT ones also with activation checkpointing)")
    p.add_argument("--train-maskrcnn-models", nargs="+", default=list(DEFAULT_TRAIN_MASKRCNN_MODELS),
                   choices=list(VARIANTS),
                   help="models of the train-maskrcnn part (the trunk checkpointed as the config sets)")
    p.add_argument("--train-precisions", nargs="+", default=list(TRAIN_PRECISIONS),
                   choices=TRAIN_PRECISIONS,
                   help="training rows in fp32 and/or under the configs' mixed precision (amp: "
                        "train.amp.enabled, autocast bfloat16 on the CPU)")
    p.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    p.add_argument("--runs", type=int, default=3, help="timed passes per model")
    p.add_argument("--warmup", type=int, default=1, help="untimed passes per model first")
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--amp", action="store_true",
                   help="inference rows under bf16 autocast (CUDA only; the default is fp32; "
                        "training rows: --train-precisions)")
    p.add_argument("--compile", nargs="*", default=[], choices=list(VARIANTS), metavar="MODEL",
                   help="also time torch.compile of these backbones (compiling takes minutes)")
    p.add_argument("--default-forward", nargs="*", default=[],
                   choices=[v for v in VARIANTS if VARIANTS[v]["kind"] != "vit"], metavar="MODEL",
                   help="also time these backbones' default forward: the model as built, without "
                        "optimize_for_cpu_inference (what model(x) runs)")
    p.add_argument("--scale", default="base", choices=list(SCALES),
                   help="trunk width: base (ViT-B) or tiny (to test the harness)")
    p.add_argument("--out", default="output/benchmark", help="directory for json, md and png")
    p.add_argument("--curve", action="store_true",
                   help="the cost curve instead: backbones vit, hpvit-2262-conv and hpvit-1191-conv "
                        f"at {' '.join(map(str, CURVE_SIZES))} (time, peak memory, FLOPs; one run "
                        "each), written to curve.{json,md,png}; with --parts train, training steps "
                        "of the trunks vit and hpvit-2262-conv as their configs set them "
                        "(train-curve.{json,md,png})")
    p.add_argument("--profile", choices=list(VARIANTS), metavar="MODEL",
                   help="instead: torch.profiler over one backbone pass of MODEL at the first "
                        "--sizes, the ops that take the time (README block 'bench-profile'); with "
                        "--parts train, one training step of MODEL's trunk as its config "
                        "checkpoints it, at the first --train-sizes, in the first "
                        "--train-precisions (block 'bench-train-profile-MODEL')")
    p.add_argument("--readme", help="write the table into this README's 'bench' block ('bench-curve' "
                                    "with --curve, 'bench-compile' with --compile, 'bench-profile' "
                                    "with --profile, 'bench-train' with only training parts, "
                                    "'bench-train-curve' with both)")
    p.add_argument("--system-allocator", action="store_true",
                   help="leave glibc's allocator as it is (by default freed CPU memory is kept for "
                        "reuse, hpvit_d2.cpu_memory: large tensors then cost no page faults)")
    p.add_argument("--cpu-linear", choices=CPU_LINEARS, default=None,
                   help="the kernel of HPViT's projections in the CPU inference rows: onednn, mkl "
                        "(F.linear) or auto (both timed on the blocks' shapes, the faster wins); "
                        f"default: {CPU_LINEAR_ENV}, else auto. The header says which ran")
    p.add_argument("--measure-row", help=argparse.SUPPRESS)
    return p


def main(argv) -> int:
    args = _parser().parse_args(argv)
    if args.system_allocator:  # also for the --measure-row subprocesses, which inherit it
        os.environ[cpu_memory.ENV_VAR] = "0"
    if not args.device.startswith("cuda"):
        cpu_memory.retain_freed_cpu_memory()  # before any model is built
    if args.measure_row:
        print(json.dumps(measure_row(json.loads(args.measure_row))))
        return 0
    if args.amp and not args.device.startswith("cuda"):
        raise ConfigError("--amp is the CUDA bf16 path: add --device cuda (CPU runs in fp32)")
    if args.runs < 1 or args.warmup < 0:
        raise ConfigError(f"--runs {args.runs} / --warmup {args.warmup}: "
                          "need runs >= 1 and warmup >= 0")
    train_only = set(args.parts) <= set(TRAIN_PARTS)
    if args.profile:
        return _profile(args, argv, train_only)
    if args.curve and train_only:
        args.parts = ["train"]
        args.train_sizes = args.sizes or list(CURVE_SIZES)
        args.train_models = ["vit", "hpvit-2262-conv"]
    elif args.curve:
        args.parts, args.runs = ["backbone"], 1
        args.sizes = args.sizes or list(CURVE_SIZES)
        args.models = ["vit", "hpvit-2262-conv", "hpvit-1191-conv"]
    args.sizes = args.sizes or [512, 1024]
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    results = run(args, log)
    name = ("train-curve" if train_only else "curve") if args.curve else "benchmark"
    table = write_outputs(results, Path(args.out), name, curve=args.curve)
    command = command_line("hpvit_lab.bench", argv)
    caption = (f"`{command.strip()}`, {results['date']}, {results['machine']}, torch "
               f"{results['torch']}, {results['threads']} threads, batch {results['batch']}, "
               f"{results['runs']} run(s) after {results['warmup']} warm-up; matmul roofline "
               f"measured in the run: {results['roofline_gmacs']:.1f} GMAC/s.")
    print(table + "\n\n" + caption)
    print(f"wrote {Path(args.out) / (name + '.json')}, {name}.md, {name}.png")
    if args.readme:
        block = (("bench-train-curve" if train_only else "bench-curve") if args.curve
                 else "bench-compile" if args.compile else "bench-train" if train_only else "bench")
        update_readme_block(args.readme, block, table + "\n\n" + caption)
    return 0


def _profile(args, argv, train: bool) -> int:
    """
    torch.profiler over one pass (after a warm-up): time by op, as a table. The pass is the
    backbone's inference, or with ``--parts train`` one training step of the trunk as its config
    checkpoints it, in the first of ``--train-precisions`` (``amp``: bf16 autocast), at the first
    of ``--train-sizes`` (block 'bench-train-profile-MODEL').
    """
    from torch.profiler import ProfilerActivity, profile

    torch.set_num_threads(args.threads)
    if train and args.parts != ["train"]:
        raise ConfigError(f"--profile with --parts {' '.join(args.parts)}: profiles one trunk; "
                          "use --parts train (a training step) or backbone (inference)")
    size = ((args.train_sizes if train else args.sizes) or [1024])[0]
    part = "train" if train else "backbone"
    amp = train and args.train_precisions[0] == "amp"
    checkpoint = config_act_checkpoint(args.profile) if train else False
    model = build_model(args.profile, part, args.scale, size, checkpoint)
    step = make_step(model, part, make_inputs(part, size, args.batch, "cpu"), "cpu", amp)
    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        step()
        total = time.perf_counter() - start
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    own = sum(e.self_cpu_time_total for e in events)
    lines = ["| op | self CPU (s) | share | calls |", "|---|---:|---:|---:|"]
    shown = 16 if train else 12
    for e in events[:shown]:
        lines.append(f"| `{e.key}` | {e.self_cpu_time_total / 1e6:.2f} | "
                     f"{100 * e.self_cpu_time_total / own:.0f}% | {e.count} |")
    rest = events[shown:]
    if rest:
        rest_us = sum(e.self_cpu_time_total for e in rest)
        lines.append(f"| {len(rest)} other ops | {rest_us / 1e6:.2f} | {100 * rest_us / own:.0f}% | "
                     f"{sum(e.count for e in rest)} |")
    command = command_line("hpvit_lab.bench", argv)
    row = Row(part, size, args.profile, checkpoint, amp=amp, scale=args.scale)
    what = f"one training step of {row.name}" if train else f"{row.name} backbone"
    caption = (f"`{command.strip()}`, {datetime.date.today().isoformat()}, {_machine('cpu')}, "
               f"{torch.get_num_threads()} threads: {what} at {size}x{size}, one pass of "
               f"{total:.2f} s (under the profiler), by op.")
    table = "\n".join(lines)
    print(table + "\n\n" + caption)
    if args.readme:
        block = f"bench-train-profile-{args.profile}" if train else "bench-profile"
        update_readme_block(args.readme, block, table + "\n\n" + caption)
    return 0


def entry() -> None:
    """``python -m hpvit_lab.bench``."""
    sys.exit(run_command(main))


if __name__ == "__main__":
    entry()
