"""
Look at a config's training data as the model sees it, like detectron2's tools/visualize_data.py
(which cannot read these LazyConfigs): ``python -m hpvit_d2.cli.browse``, ``hpvit-browse``.

    python -m hpvit_d2.cli.browse --config-file mask_rcnn_hpvit_tiny.py --output browse/
    python -m hpvit_d2.cli.browse --config-file mask_rcnn_hpvit_b.py --source annotation \\
        --num-images 20 --output browse_b/

--source dataloader (default) draws the ground truth after the train-time augmentation (the
config's training loader, its mapper and augmentations): instances for the detection configs,
the label map for the semantic segmentation ones; --source annotation draws the dataset
dicts as loaded and checked. One PNG per image in the --output directory (--output-dir, its
former spelling, still works). --register-coco and KEY=VALUE overrides as for training. It runs no
model, so it takes no --device. Exit codes: 0, 2 on a bad config, override or dataset.
"""
import argparse
import os
import sys
from typing import Sequence

from .common import (EXIT_OK, add_debug_flag, add_overrides, add_register_coco_flag,
                     check_output_path, parse_command, program_name, register_datasets, run)

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=program_name("hpvit-browse"), description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="config path or shipped name")
    parser.add_argument("--source", choices=("dataloader", "annotation"), default="dataloader")
    parser.add_argument("--output", "--output-dir", dest="output", required=True, metavar="DIR",
                        help="directory for the drawn images (--output-dir: deprecated spelling)")
    parser.add_argument("--num-images", type=int, default=8)
    add_register_coco_flag(parser)
    add_debug_flag(parser)
    add_overrides(parser)
    return parser


def main(argv: Sequence[str]) -> int:
    args = parse_command(_parser(), argv)
    if any(a == "--output-dir" or a.startswith("--output-dir=") for a in argv):
        print("note: --output-dir is deprecated; it is --output on every command", file=sys.stderr)
    check_output_path("--output", args.output, "directory")
    import numpy as np
    from detectron2.config import instantiate
    from detectron2.data import MetadataCatalog
    from detectron2.data.detection_utils import convert_image_to_rgb
    from detectron2.utils.visualizer import Visualizer
    from PIL import Image
    from tqdm import tqdm

    from ..data.images import read_image_checked
    from ..engine.train_loop import build_train_loader
    from ..model_zoo import get_config

    register_datasets(args)
    cfg = get_config(args.config_file, args.opts)
    names = cfg.dataloader.train.dataset.names
    metadata = MetadataCatalog.get(names if isinstance(names, str) else names[0])
    os.makedirs(args.output, exist_ok=True)
    written = 0
    progress = tqdm(total=args.num_images, desc="browse", unit="img", file=sys.stderr)
    if args.source == "annotation":
        for record in instantiate(cfg.dataloader.train.dataset)[: args.num_images]:
            image = read_image_checked(record["file_name"], format="RGB")
            drawn = Visualizer(image, metadata).draw_dataset_dict(record).get_image()
            name = os.path.splitext(os.path.basename(record["file_name"]))[0]
            Image.fromarray(drawn).save(os.path.join(args.output, f"{name}.png"))
            written += 1
            progress.update()
    else:
        image_format = cfg.dataloader.train.mapper.get("image_format", "BGR")
        for batch in build_train_loader(cfg, seed=max(0, cfg.train.get("seed", 0))):
            for sample in batch:
                if written >= args.num_images:
                    break
                image = sample["image"].permute(1, 2, 0).numpy()
                image = np.ascontiguousarray(convert_image_to_rgb(image, image_format))
                drawn = _draw_sample(Visualizer(image, metadata), sample, metadata)
                name = os.path.splitext(os.path.basename(sample["file_name"]))[0]
                Image.fromarray(drawn).save(os.path.join(args.output, f"{written:04d}_{name}.png"))
                written += 1
                progress.update()
            if written >= args.num_images:
                break
    progress.close()
    print(f"wrote {written} image(s) to {args.output}", file=sys.stderr)
    return EXIT_OK


def _draw_sample(visualizer, sample: dict, metadata):
    """The ground truth of one mapped training sample: its ``instances`` (detection: boxes,
    masks, keypoints) or its ``sem_seg`` label map ((H, W) class ids, 255 ignored)."""
    if "sem_seg" in sample:
        return visualizer.draw_sem_seg(sample["sem_seg"].numpy(), alpha=0.5).get_image()
    fields = sample["instances"].get_fields()
    classes = metadata.get("thing_classes", None)
    labels = [classes[i] if classes else str(int(i)) for i in fields["gt_classes"]]
    return visualizer.overlay_instances(
        labels=labels, boxes=fields.get("gt_boxes"), masks=fields.get("gt_masks"),
        keypoints=fields.get("gt_keypoints")).get_image()


def entry() -> None:
    """Console command ``hpvit-browse``."""
    sys.exit(run(main))


if __name__ == "__main__":
    entry()
