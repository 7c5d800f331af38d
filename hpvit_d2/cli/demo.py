"""
Draw the predictions of an HPViT (or ViTDet) Mask R-CNN, or of a semantic segmentation model
(UperNet configs), on images: ``projects/HPViT/demo.py``, ``hpvit-demo``.

    python projects/HPViT/demo.py --config-file mask_rcnn_hpvit_tiny.py \
        --input photos/ extra.jpg --output vis/ --weights output/hpvit_tiny/model_final.pth

--input takes image files and directories (their images, not recursive). One PNG per readable
input is written to --output, named after the input, drawn with detectron2's Visualizer and the
class names of the config's test dataset: instances with score >= --confidence-threshold for a
detector, the label map (``Visualizer.draw_sem_seg``, argmax of the scores) for a semantic
segmentor. Unreadable inputs are skipped with a message naming the
file. Weights load strictly: a checkpoint of another model, or a plain ViT, is refused
(--allow-partial loads what fits). Without --weights the model loads train.init_checkpoint
(empty: random weights, with a warning). --opts takes config overrides, e.g.
--opts train.device=cuda. Exit code: 0 if every input was drawn, 1 if any failed, 2 on a bad
config, override, device or weights.
"""
import argparse
import os
import sys
from typing import List, Sequence, Tuple

from tqdm import tqdm

from .common import EXIT_FAILED_INPUTS, EXIT_OK, EXIT_USAGE, add_debug_flag, run

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

__all__ = ["IMAGE_EXTENSIONS", "argument_parser", "collect_inputs", "main"]


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="demo.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, metavar="FILE",
                        help="LazyConfig path, or a name under configs/ (mask_rcnn_hpvit_tiny.py)")
    parser.add_argument("--input", required=True, nargs="+", metavar="IMG|DIR",
                        help="image files and/or directories of images")
    parser.add_argument("--output", required=True, metavar="DIR",
                        help="directory for the visualisations (created if needed)")
    parser.add_argument("--weights", default=None, metavar="PATH|URL",
                        help="checkpoint to load (default: the config's train.init_checkpoint)")
    parser.add_argument("--confidence-threshold", type=float, default=0.5,
                        help="minimum score of the drawn instances (default: 0.5)")
    parser.add_argument("--allow-partial", action="store_true",
                        help="load weights that do not fill the model (the rest stays random)")
    add_debug_flag(parser)
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], metavar="KEY=VALUE",
                        help="config overrides, e.g. train.device=cuda")
    return parser


def collect_inputs(inputs: List[str]) -> Tuple[List[str], List[str]]:
    """Expand directories into their image files (sorted); returns (files, missing paths)."""
    files, missing = [], []
    for path in inputs:
        if os.path.isdir(path):
            files += sorted(os.path.join(path, name) for name in os.listdir(path)
                            if name.lower().endswith(IMAGE_EXTENSIONS))
        elif os.path.isfile(path):
            files.append(path)
        else:
            missing.append(path)
    return files, missing


def _output_path(output_dir: str, input_path: str, used: set) -> str:
    """``output_dir/<input stem>.png``, with a numeric suffix if two inputs share a stem."""
    stem = os.path.splitext(os.path.basename(input_path))[0]
    name, k = stem, 1
    while name in used:
        name, k = f"{stem}_{k}", k + 1
    used.add(name)
    return os.path.join(output_dir, name + ".png")


def _build_predictor(args):
    from ..model_zoo import get_config
    from ..predictor import LazyPredictor

    cfg = get_config(args.config_file, args.opts)
    if args.weights is not None:
        cfg.train.init_checkpoint = args.weights
    thresholds = cfg.model.get("roi_heads", {}).get("box_predictor", {})
    if "test_score_thresh" in thresholds:
        thresholds.test_score_thresh = args.confidence_threshold
    return LazyPredictor(cfg, strict=not args.allow_partial)


def _draw(predictor, image_bgr, threshold: float):
    """(VisImage, one-line description of what was drawn)."""
    from detectron2.utils.visualizer import ColorMode, Visualizer

    prediction = predictor(image_bgr)
    visualizer = Visualizer(image_bgr[:, :, ::-1], predictor.metadata,
                            instance_mode=ColorMode.IMAGE)
    if predictor.task == "sem_seg":
        labels = prediction.argmax(0)
        names = (predictor.metadata.get("stuff_classes", None)
                 if predictor.metadata is not None else None)
        present = [names[i] if names and i < len(names) else str(i)
                   for i in labels.unique().tolist()]
        return visualizer.draw_sem_seg(labels, alpha=0.5), f"classes {', '.join(present)}"
    instances = prediction[prediction.scores >= threshold]
    return (visualizer.draw_instance_predictions(instances),
            f"{len(instances)} instance(s) with score >= {threshold}")


def main(argv: Sequence[str]) -> int:
    args = argument_parser().parse_args(argv)
    from detectron2.data.detection_utils import read_image

    files, failed = collect_inputs(args.input)
    for path in failed:
        print(f"skipping {path}: no such file or directory", file=sys.stderr)
    if not files and not failed:
        print(f"error: no images ({', '.join(IMAGE_EXTENSIONS)}) in {args.input}", file=sys.stderr)
        return EXIT_USAGE
    predictor = _build_predictor(args)

    os.makedirs(args.output, exist_ok=True)
    used: set = set()
    written = 0
    for path in tqdm(files, desc="demo", unit="img", file=sys.stderr):
        try:
            image = read_image(path, format="BGR")
        except Exception as e:  # PIL raises several types for corrupt or truncated files
            tqdm.write(f"skipping {path}: cannot be read as an image ({type(e).__name__}: {e})",
                       file=sys.stderr)
            failed.append(path)
            continue
        vis, drawn = _draw(predictor, image, args.confidence_threshold)
        out = _output_path(args.output, path, used)
        vis.save(out)
        written += 1
        tqdm.write(f"{path}: {drawn} -> {out}", file=sys.stderr)

    print(f"wrote {written} visualisation(s) to {args.output}", file=sys.stderr)
    if failed:
        print(f"{len(failed)} input(s) failed: {', '.join(failed)}", file=sys.stderr)
        return EXIT_FAILED_INPUTS
    return EXIT_OK


def entry() -> None:
    """Console command ``hpvit-demo``."""
    sys.exit(run(main))


if __name__ == "__main__":
    entry()
