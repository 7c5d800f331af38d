"""
Draw the predictions of an HPViT (or ViTDet) Mask R-CNN, or of a semantic segmentation model
(UperNet configs), on images or a video, as detectron2's demo/demo.py: ``projects/HPViT/demo.py``,
``hpvit-demo``.

    python projects/HPViT/demo.py --config-file mask_rcnn_hpvit_tiny.py \\
        --input photos/ 'more/*.jpg' extra.jpg --output vis/ --weights output/demo/hpvit_tiny/model_final.pth
    python projects/HPViT/demo.py --config-file mask_rcnn_hpvit_tiny.py --video-input clip.mp4 \\
        --output clip_vis.mp4 --weights output/demo/hpvit_tiny/model_final.pth

--input takes image files, directories (their images, not recursive) and glob patterns (quoted,
expanded here). One PNG per readable input is written to the --output directory, named after the
input, drawn with detectron2's Visualizer and the class names of the config's test dataset:
instances with score >= --confidence-threshold for a detector, the label map
(``Visualizer.draw_sem_seg``, argmax of the scores) for a semantic segmentor. For a detector,
``predictions.json`` holds them in COCO results format (image file, category id of the dataset,
box [x, y, w, h], score, RLE mask). --video-input reads frames with OpenCV and writes the drawn
video to --output (a file: .mp4 or .avi) and a detector's predictions beside it
(``<output>.json``, one entry per frame). Images are read by the project's reader
(``hpvit_d2.data.images.read_image_checked``: 16-bit and alpha converted, float images and images
above the pixel cap refused). An input that cannot be read or predicted is skipped with a message
naming it, the batch goes on, and predictions.json holds the others. Weights load strictly: a
checkpoint of another model, or a plain ViT, is refused (--allow-partial loads what fits).
Without --weights the model loads train.init_checkpoint (empty: random weights, with a warning).
Config overrides are KEY=VALUE arguments (e.g. model.roi_heads.box_predictor.test_nms_thresh=0.4;
--opts KEY=VALUE ... too), before or after the flags; --device D is train.device=D. On the CPU the
model runs tuned for inference (hpvit_d2.modeling.optimize_for_cpu_inference) and the process keeps
freed memory for reuse (hpvit_d2.cpu_memory); --no-cpu-tuning turns both off. Exit code: 0 if
every input was drawn, 1 if some failed (named at the end), 2 if none could be drawn (when no
header reads, before the model is built) or on a bad config, override, device, dataset or weights.
"""
import argparse
import glob
import json
import os
import re
import sys
from typing import Dict, List, Sequence, Tuple

from .common import (
    EXIT_FAILED_INPUTS,
    EXIT_OK,
    EXIT_USAGE,
    add_debug_flag,
    add_device_flag,
    add_overrides,
    add_register_coco_flag,
    check_output_path,
    parse_command,
    program_name,
    register_datasets,
    run,
)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

__all__ = ["IMAGE_EXTENSIONS", "argument_parser", "collect_inputs", "main", "to_coco_results"]


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=program_name("hpvit-demo"), description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, metavar="FILE",
                        help="LazyConfig path, or a name under configs/ (mask_rcnn_hpvit_tiny.py)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", nargs="+", metavar="IMG|DIR|GLOB",
                        help="image files, directories of images, quoted glob patterns")
    source.add_argument("--video-input", metavar="VIDEO", help="a video file (OpenCV reads it)")
    parser.add_argument("--output", required=True, metavar="DIR|VIDEO",
                        help="directory for the drawn images and predictions.json (created if "
                             "needed); with --video-input, the output video file")
    parser.add_argument("--weights", default=None, metavar="PATH|URL",
                        help="checkpoint to load (default: the config's train.init_checkpoint)")
    parser.add_argument("--confidence-threshold", type=float, default=0.5,
                        help="minimum score of the drawn instances (default: 0.5)")
    parser.add_argument("--allow-partial", action="store_true",
                        help="load weights that do not fill the model (the rest stays random)")
    parser.add_argument("--no-cpu-tuning", dest="cpu_tuning", action="store_false",
                        help="on the CPU, run the model as built (its default forward, without "
                             "optimize_for_cpu_inference), and glibc's allocator left as it is")
    add_device_flag(parser)
    add_register_coco_flag(parser)
    add_debug_flag(parser)
    add_overrides(parser)
    return parser


def _overrides_out_of_inputs(args) -> None:
    """``--input a.png KEY=VALUE``: ``--input`` takes several values, so an override written
    right after it lands among the inputs; one that names no file is moved to the overrides."""
    from ..overrides import ConfigError

    if not args.input:
        return
    moved = [item for item in args.input
             if re.match(r"^\+?[A-Za-z_][\w.]*=", item) and not os.path.exists(item)]
    args.input = [item for item in args.input if item not in moved]
    args.opts = [*moved, *args.opts]
    if not args.input:
        raise ConfigError("--input: no image given (only KEY=VALUE overrides followed it)")


def collect_inputs(inputs: List[str]) -> Tuple[List[str], List[str]]:
    """Expand directories and glob patterns into image files (sorted); returns (files, missing)."""
    files, missing = [], []
    for path in inputs:
        if not os.path.exists(path) and glob.has_magic(path):
            matches = sorted(p for p in glob.glob(path) if os.path.isfile(p))
            if matches:
                files += matches
            else:
                missing.append(path)
        elif os.path.isdir(path):
            names = sorted(os.listdir(path))
            files += [os.path.join(path, name) for name in names
                      if name.lower().endswith(IMAGE_EXTENSIONS)
                      and os.path.isfile(os.path.join(path, name))]
            _name_skipped_entries(path, [n for n in names if os.path.join(path, n) not in files])
        elif os.path.isfile(path):
            files.append(path)
        else:
            missing.append(path)
    return files, missing


def _name_skipped_entries(directory: str, names: List[str]) -> None:
    """One line naming what a directory input holds besides images (not read, not an error)."""
    if not names:
        return
    shown = [n + ("/" if os.path.isdir(os.path.join(directory, n)) else "") for n in names[:5]]
    print(f"skipping {len(names)} entries of {directory} that are not images "
          f"({', '.join(IMAGE_EXTENSIONS)}; folders are not searched): {', '.join(shown)}"
          + (", ..." if len(names) > 5 else ""), file=sys.stderr)


def _output_path(output_dir: str, input_path: str, used: set) -> str:
    """``output_dir/<input stem>.png``, with a numeric suffix if two inputs share a stem."""
    stem = os.path.splitext(os.path.basename(input_path))[0]
    name, k = stem, 1
    while name in used:
        name, k = f"{stem}_{k}", k + 1
    used.add(name)
    return os.path.join(output_dir, name + ".png")


def _load_config(args):
    """The checked config (overrides, device, datasets) with the weights and threshold applied."""
    from ..model_zoo import check_device, get_config

    register_datasets(args)
    cfg = get_config(args.config_file, args.opts)
    check_device(cfg.train.get("device", "cpu"))
    if args.weights is not None:
        cfg.train.init_checkpoint = args.weights
    thresholds = cfg.model.get("roi_heads", {}).get("box_predictor", {})
    if "test_score_thresh" in thresholds:
        thresholds.test_score_thresh = args.confidence_threshold
    return cfg


def _build_predictor(args, cfg):
    from ..predictor import LazyPredictor

    predictor = LazyPredictor(cfg, strict=not args.allow_partial, optimize=args.cpu_tuning)
    if args.cpu_tuning and predictor.device.type == "cpu":
        from ..cpu_memory import retain_freed_cpu_memory

        retain_freed_cpu_memory()  # this command's process: freed memory kept for the next image
    return predictor


def _draw(predictor, image_bgr, threshold: float):
    """(drawn RGB image (H, W, 3) uint8, one-line description, the kept Instances or None)."""
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
        return (visualizer.draw_sem_seg(labels, alpha=0.5).get_image(),
                f"classes {', '.join(present)}", None)
    instances = prediction[prediction.scores >= threshold]
    return (visualizer.draw_instance_predictions(instances).get_image(),
            f"{len(instances)} instance(s) with score >= {threshold}", instances)


def to_coco_results(instances, file_name: str, metadata) -> List[Dict]:
    """COCO results-format records of ``instances``, category ids mapped back to the dataset's."""
    from detectron2.evaluation.coco_evaluation import instances_to_coco_json

    records = instances_to_coco_json(instances, file_name)
    to_dataset = {v: k for k, v in getattr(metadata, "thing_dataset_id_to_contiguous_id", {}).items()}
    classes = getattr(metadata, "thing_classes", None)
    for record in records:
        record["file_name"] = record.pop("image_id")
        contiguous = record["category_id"]
        record["category_id"] = to_dataset.get(contiguous, contiguous)
        if classes:
            record["category_name"] = classes[contiguous]
    return records


def _run_video(args, predictor) -> int:
    import cv2
    from tqdm import tqdm

    capture = cv2.VideoCapture(args.video_input)
    if not capture.isOpened():
        print(f"error: --video-input {args.video_input}: OpenCV cannot open it (missing file, "
              "or a codec this OpenCV build lacks)", file=sys.stderr)
        return EXIT_USAGE
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    fourcc = cv2.VideoWriter_fourcc(*("XVID" if args.output.lower().endswith(".avi") else "mp4v"))
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    writer, predictions, frame_index = None, [], 0
    for _ in tqdm(range(total) if total else iter(int, 1), desc="demo", unit="frame", file=sys.stderr):
        ok, frame = capture.read()
        if not ok:
            break
        drawn, _, instances = _draw(predictor, frame, args.confidence_threshold)
        if writer is None:
            writer = cv2.VideoWriter(args.output, fourcc, fps, (frame.shape[1], frame.shape[0]))
        writer.write(drawn[:, :, ::-1])
        if instances is not None:
            predictions += to_coco_results(instances, f"frame_{frame_index:06d}",
                                           predictor.metadata)
        frame_index += 1
    capture.release()
    if writer is None:
        print(f"error: --video-input {args.video_input}: no frame could be read", file=sys.stderr)
        return EXIT_USAGE
    writer.release()
    from ..checkpoint.io import AtomicFile

    with AtomicFile(os.path.splitext(args.output)[0] + ".json", "w") as f:
        json.dump(predictions, f)
    print(f"wrote {frame_index} frame(s) to {args.output} and their predictions to "
          f"{os.path.splitext(args.output)[0]}.json", file=sys.stderr)
    return EXIT_OK


def main(argv: Sequence[str]) -> int:
    args = parse_command(argument_parser(), argv)
    _overrides_out_of_inputs(args)
    check_output_path("--output", args.output, "file" if args.video_input else "directory",
                      example="clip_vis.mp4")
    from PIL import Image
    from tqdm import tqdm

    from ..checkpoint.io import AtomicFile
    from ..data.images import BadImageError, read_image_checked

    cfg = _load_config(args)
    if args.video_input:
        if not os.path.isfile(args.video_input):
            print(f"error: --video-input {args.video_input}: no such file", file=sys.stderr)
            return EXIT_USAGE
        return _run_video(args, _build_predictor(args, cfg))
    files, failed = collect_inputs(args.input)
    for path in failed:
        print(f"skipping {path}: no such file or directory", file=sys.stderr)
    if not files and not failed:
        print(f"error: no images ({', '.join(IMAGE_EXTENSIONS)}) in {args.input}", file=sys.stderr)
        return EXIT_USAGE
    files, unreadable = _readable_headers(files)
    failed += unreadable
    if not files:  # nothing to draw: say so before the model is built
        return _nothing_drawn(failed, "is a readable image")
    predictor = _build_predictor(args, cfg)

    os.makedirs(args.output, exist_ok=True)
    used: set = set()
    written, predictions = 0, []
    for path in tqdm(files, desc="demo", unit="img", file=sys.stderr):
        try:  # the project's reader: 16-bit, alpha, EXIF converted; float, too large refused
            image = read_image_checked(path, format="BGR")
            drawn, description, instances = _draw(predictor, image, args.confidence_threshold)
        except Exception as e:  # one bad input does not stop the batch (--debug: traceback)
            if args.debug:
                raise
            cause = str(e) if isinstance(e, BadImageError) else f"{type(e).__name__}: {e}"
            tqdm.write(f"skipping {path}: {' '.join(cause.split())}", file=sys.stderr)
            failed.append(path)
            continue
        out = _output_path(args.output, path, used)
        with AtomicFile(out, "wb") as f:
            Image.fromarray(drawn).save(f, format="PNG")
        if instances is not None:
            predictions += to_coco_results(instances, path, predictor.metadata)
        written += 1
        tqdm.write(f"{path}: {description} -> {out}", file=sys.stderr)

    with AtomicFile(os.path.join(args.output, "predictions.json"), "w") as f:
        json.dump(predictions, f)
    print(f"wrote {written} visualisation(s) and predictions.json to {args.output}",
          file=sys.stderr)
    if failed and not written:
        return _nothing_drawn(failed, "could be drawn")
    if failed:
        print(f"{len(failed)} input(s) failed: {', '.join(failed)}", file=sys.stderr)
        return EXIT_FAILED_INPUTS
    return EXIT_OK


def _nothing_drawn(failed: List[str], why: str) -> int:
    """The one error line when no input was drawn (the first few named); exit code 2."""
    named = ", ".join(failed[:3]) + (", ..." if len(failed) > 3 else "")
    print(f"error: --input: none of the {len(failed)} input(s) {why} ({named})", file=sys.stderr)
    return EXIT_USAGE


def _readable_headers(files: List[str]) -> Tuple[List[str], List[str]]:
    """``files`` split into (those whose image header reads, those named as skipped)."""
    from ..data.images import BadImageError, read_image_size

    readable, unreadable = [], []
    for path in files:
        try:
            read_image_size(path)
        except BadImageError as e:
            cause = " ".join(str(e.__cause__ or e).split())
            print(f"skipping {path}: not a readable image ({cause})", file=sys.stderr)
            unreadable.append(path)
        else:
            readable.append(path)
    return readable, unreadable


def entry() -> None:
    """Console command ``hpvit-demo``."""
    sys.exit(run(main))


if __name__ == "__main__":
    entry()
