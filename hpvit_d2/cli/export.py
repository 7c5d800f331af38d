"""
Export a trained model for deployment, with detectron2's tools/deploy/export_model.py flags:
``projects/HPViT/export.py``, ``hpvit-export``.

    python projects/HPViT/export.py --config-file mask_rcnn_hpvit_tiny.py \\
        --weights output/demo/hpvit_tiny/model_final.pth --sample-image photo.jpg \\
        --format torchscript --export-method tracing --output exported/

- ``--format torchscript``: ``model.ts``, the whole detector traced with detectron2's
  ``TracingAdapter`` (input: one (3, H, W) image tensor in the config's channel order, resized
  as ``dataloader.test`` does; outputs: boxes, classes, masks, scores, image size, in
  ``TracingAdapter``'s flattened order). It is loaded back and run on the sample image, and its
  boxes and scores are compared with the eager model's.
- ``--format onnx``: ``backbone.onnx``, the backbone (HPViT + FPN, or ViTDet's trunk + pyramid:
  ``model.backbone``; input ``image`` (1, 3, H, W) normalised and padded as the model does
  (``model.preprocess_image``); outputs its feature maps by name),
  exported with torch.onnx's tracing exporter and checked with onnxruntime against eager.
  The detection heads stay in PyTorch (their NMS and RoIAlign have no portable ONNX export).
Traced graphs are specialised to the sample image's size: export with an image of the size you
will run. The model runs on the config's ``train.device`` (``--device D``: ``train.device=D``;
the B configs say cuda, so ``--device cpu`` exports them on a machine without a GPU). Every export prints and writes (``export_report.json``) the differences it measured.
Exit codes: 0 exported and checked, 1 exported but the check failed (difference above
``--tolerance``), 2 bad config, weights, image or device, 3 ``--format onnx`` without the
``onnx`` extra (``pip install 'hpvit_d2[onnx]'``: onnx and onnxruntime).
"""
import argparse
import json
import math
import os
import sys
from typing import Dict, Sequence

from .common import (EXIT_FAILED_INPUTS, EXIT_OK, add_debug_flag, add_device_flag, add_overrides,
                     check_output_path, parse_command, program_name, require_extra, run)

__all__ = ["export_onnx_backbone", "export_torchscript", "main"]


def _tolerance(text: str) -> float:
    """``--tolerance``: a finite number >= 0 (``nan`` would pass every comparison)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text} is not a finite number >= 0")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=program_name("hpvit-export"), description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="config path or shipped name")
    parser.add_argument("--weights", required=True, help="trained detector checkpoint")
    parser.add_argument("--format", choices=("torchscript", "onnx"), default="torchscript")
    parser.add_argument("--export-method", choices=("tracing",), default="tracing",
                        help="tracing (detectron2's scripting needs its scriptable heads: not here)")
    parser.add_argument("--sample-image", required=True, help="an image of the size to export")
    parser.add_argument("--output", required=True, help="output directory")
    parser.add_argument("--tolerance", type=_tolerance, default=1e-3,
                        help="largest accepted difference to eager (default 1e-3)")
    add_device_flag(parser)
    add_debug_flag(parser)
    add_overrides(parser)
    return parser


def _sample_input(cfg, path: str):
    """The sample image as the model's test loader gives it: (3, H, W) float tensor."""
    import numpy as np
    import torch
    from detectron2.config import instantiate
    from detectron2.data import transforms as T

    from ..data.images import BadImageError, read_image_checked
    from ..data.transforms import non_empty
    from ..overrides import ConfigError

    if not os.path.isfile(path):
        raise ConfigError(f"--sample-image {path}: no such file; give an image of the size the "
                          "exported model will run at")
    try:
        image = read_image_checked(path, cfg.dataloader.test.mapper.get("image_format", "BGR"))
    except BadImageError as e:
        raise ConfigError(f"--sample-image {path}: not a readable image "
                          f"({' '.join(str(e.__cause__ or e).split())})") from None
    aug = T.AugmentationList(non_empty(instantiate(cfg.dataloader.test.mapper.augmentations)))
    aug_input = T.AugInput(image)
    aug(aug_input)
    return torch.as_tensor(np.ascontiguousarray(aug_input.image.transpose(2, 0, 1)).astype("float32"))


def export_torchscript(model, image, path: str) -> Dict[str, float]:
    """Trace the detector on ``image`` (3, H, W), save to ``path``, reload, compare with eager."""
    import torch
    from detectron2.export import TracingAdapter

    inputs = [{"image": image}]

    def inference(model, inputs):
        instances = model.inference(inputs, do_postprocess=False)[0]
        return [{"instances": instances}]

    adapter = TracingAdapter(model, inputs, inference)
    with torch.no_grad():
        traced = torch.jit.trace(adapter, adapter.flattened_inputs, check_trace=False)
    from ..checkpoint.io import AtomicFile

    with AtomicFile(path, "wb") as f:
        torch.jit.save(traced, f)
    loaded = torch.jit.load(path)
    with torch.no_grad():
        expected = inference(model, inputs)[0]["instances"]
        got = adapter.outputs_schema(loaded(image))[0]["instances"]
    report = {"instances_eager": len(expected), "instances_exported": len(got)}
    if len(got) != len(expected):
        report["max_abs_box_diff"] = float("inf")
        return report
    report["max_abs_box_diff"] = float((got.pred_boxes.tensor - expected.pred_boxes.tensor).abs().max()) \
        if len(got) else 0.0
    report["max_abs_score_diff"] = float((got.scores - expected.scores).abs().max()) if len(got) else 0.0
    return report


def export_onnx_backbone(model, image, path: str) -> Dict[str, float]:
    """Export ``model.backbone`` on the normalised ``image`` to ONNX; compare with onnxruntime."""
    import numpy as np
    import onnxruntime
    import torch

    backbone = model.backbone
    x = model.preprocess_image([{"image": image}]).tensor  # normalised and padded as the model does
    with torch.no_grad():
        expected = backbone(x)
    names = list(expected)

    class Outputs(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, image):
            out = self.inner(image)
            return tuple(out[k] for k in names)

    torch.onnx.export(Outputs(backbone).eval(), (x,), path, input_names=["image"],
                      output_names=names, dynamo=False, opset_version=17)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": x.cpu().numpy()})
    return {"outputs": names, "file_mb": os.path.getsize(path) / 2**20,
            "params_mb": sum(p.numel() * p.element_size() for p in backbone.parameters()) / 2**20,
            "max_abs_diff": max(float(np.abs(g - expected[k].cpu().numpy()).max())
                                for g, k in zip(got, names))}


def main(argv: Sequence[str]) -> int:
    args = parse_command(_parser(), argv)
    check_output_path("--output", args.output, "directory")
    if args.format == "onnx":  # before any work: the export needs onnx, its check onnxruntime
        require_extra("onnx", ("onnx", "onnxruntime"), "--format onnx")
    import warnings

    import torch

    from ..model_zoo import build_model, get_config

    # Tracing specialises the graph to the sample's size (documented above): not news to repeat.
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)

    cfg = get_config(args.config_file, args.opts)
    image = _sample_input(cfg, args.sample_image)
    model = build_model(cfg, args.weights, device=cfg.train.get("device", "cpu"), strict=True,
                        verbose=False)
    os.makedirs(args.output, exist_ok=True)
    if args.format == "torchscript":
        path = os.path.join(args.output, "model.ts")
        report = export_torchscript(model, image, path)
        worst = max(report["max_abs_box_diff"], report.get("max_abs_score_diff", 0.0))
    else:
        path = os.path.join(args.output, "backbone.onnx")
        report = export_onnx_backbone(model, image, path)
        worst = report["max_abs_diff"]
    report.update(format=args.format, file=path, input_size=list(image.shape[1:]),
                  tolerance=args.tolerance, passed=worst <= args.tolerance)
    from ..checkpoint.io import AtomicFile

    with AtomicFile(os.path.join(args.output, "export_report.json"), "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps(report, indent=2))
    if not report["passed"]:
        print(f"error: {path}: exported, but differs from the eager model by {worst:.3g} "
              f"(> --tolerance {args.tolerance})", file=sys.stderr)
        return EXIT_FAILED_INPUTS
    print(f"wrote {path} (checked: largest difference {worst:.3g})", file=sys.stderr)
    return EXIT_OK


def entry() -> None:
    """Console command ``hpvit-export``."""
    sys.exit(run(main))


if __name__ == "__main__":
    entry()
