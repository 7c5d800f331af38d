"""
COCO and Cityscapes instance segmentation, ADE20K and Cityscapes semantic segmentation:
registration helpers and the checks that turn a missing or broken dataset into one readable error.

detectron2 registers the built-in names itself (``coco_2017_train``, ``coco_2017_val``,
``cityscapes_fine_instance_seg_train``, ``cityscapes_fine_instance_seg_val``,
``cityscapes_fine_sem_seg_{train,val}``, ``ade20k_sem_seg_{train,val}``...) under
``$DETECTRON2_DATASETS`` (default ``./datasets``), read when detectron2 is imported. Kinds of
dataset, told by their metadata: COCO json (``json_file`` + ``image_root``), Cityscapes
(``image_dir`` + ``gt_dir``; instance or semantic by ``evaluator_type``) and image/label
directories (``image_root`` + ``sem_seg_root``, as ``load_sem_seg`` registers them: ADE20K).
This module adds:

- :func:`register_cityscapes_instances`: a Cityscapes-format tree anywhere, with the metadata of
  the built-in names (8 thing classes, ``gt_dir`` for the official evaluation);
- :func:`check_dataset`: the files a registered dataset needs are there, else
  :class:`DatasetNotFoundError` naming the dataset, the directory looked at, the expected layout
  and how to move it;
- :func:`diagnose_annotations`: for a dataset whose loading failed, the annotation file at fault
  and what is wrong with it (used to raise :class:`DatasetFormatError`).
"""

import glob
import os
from typing import List, Optional, Tuple

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.builtin import _PREDEFINED_SPLITS_COCO, _RAW_CITYSCAPES_SPLITS
from detectron2.data.datasets.builtin_meta import _get_builtin_metadata
from detectron2.data.datasets.cityscapes import load_cityscapes_instances

from .coco_file import category_problem, image_id_problem, read_json_object, scan_coco_json
from .errors import UserDataError

__all__ = [
    "check_num_classes",
    "register_coco_json",
    "DatasetNotFoundError",
    "DatasetFormatError",
    "register_cityscapes_instances",
    "check_dataset",
    "is_builtin",
    "diagnose_annotations",
]

ROOT_VARIABLE = "DETECTRON2_DATASETS"
_MAX_LISTED = 5


class DatasetNotFoundError(FileNotFoundError):
    """A registered dataset's files are missing or incomplete on disk."""


class DatasetFormatError(UserDataError):
    """An annotation file exists but cannot be read as its format requires."""


def register_coco_json(name: str, json_file: str, image_root: str) -> None:
    """
    Register a COCO-format instance dataset, as ``register_coco_instances`` does, with its
    metadata read from the json now (class names in category-id order, the id -> contiguous
    index map), so that the class count can be checked against a config before any loading.
    Registering the same name again with the same files is a no-op.

    Raises:
        DatasetNotFoundError: the json or the image directory does not exist.
        DatasetFormatError: the json is not a COCO file (names what is wrong); the name is taken
            by another dataset.
    """
    from detectron2.data.datasets import register_coco_instances

    problems = _coco_problems(os.path.abspath(json_file), os.path.abspath(image_root))
    if problems:
        raise DatasetNotFoundError(f"--register-coco {name}: " + "; ".join(problems))
    if name in DatasetCatalog.list():
        meta = MetadataCatalog.get(name)
        source = getattr(meta, "source_json_file", getattr(meta, "json_file", None))
        if source == json_file and getattr(meta, "image_root", None) == image_root:
            return
        raise DatasetFormatError(f"--register-coco {name}: the name is taken by another dataset "
                                 f"({getattr(meta, 'json_file', 'registered in code')}); choose another")
    data, problem = read_json_object(json_file)
    if problem is None and not isinstance(data.get("categories"), list):
        problem = "key 'categories' is missing or not a list"
    problem = problem or category_problem(data["categories"])
    if problem:
        raise DatasetFormatError(f"{json_file}: {problem}")
    categories = sorted((c for c in data["categories"] if isinstance(c, dict) and "id" in c),
                        key=lambda c: c["id"])
    scan_coco_json(json_file, data)  # the load-time checks' read of the file, done now
    del data
    register_coco_instances(name, {}, json_file, image_root)
    MetadataCatalog.get(name).set(
        thing_classes=[str(c.get("name", c["id"])) for c in categories],
        thing_dataset_id_to_contiguous_id={c["id"]: i for i, c in enumerate(categories)},
    )


def check_num_classes(cfg) -> None:
    """
    Raise DatasetFormatError when ``model.roi_heads.num_classes`` differs from the class count of
    the config's train or test datasets (when their metadata knows it), giving the override to use.
    """
    num_classes = cfg.model.get("roi_heads", {}).get("num_classes")
    if num_classes is None:
        return
    for split in ("train", "test"):
        names = cfg.dataloader.get(split, {}).get("dataset", {}).get("names")
        for name in [names] if isinstance(names, str) else list(names or []):
            if name not in DatasetCatalog.list():
                continue
            classes = MetadataCatalog.get(name).get("thing_classes", None)
            if classes is not None and len(classes) != num_classes:
                shown = ", ".join(classes[:8]) + (", ..." if len(classes) > 8 else "")
                raise DatasetFormatError(
                    f"model.roi_heads.num_classes={num_classes}, but dataset '{name}' has "
                    f"{len(classes)} classes ({shown}): add the override "
                    f"model.roi_heads.num_classes={len(classes)}")


def register_cityscapes_instances(name: str, image_dir: str, gt_dir: str) -> None:
    """
    Register a Cityscapes instance-segmentation split that lives outside ``$DETECTRON2_DATASETS``.

    Args:
        name: dataset name to register (must be new).
        image_dir: ``.../leftImg8bit/{split}``, holding ``{city}/*_leftImg8bit.png``.
        gt_dir: ``.../gtFine/{split}``, holding ``{city}/*_gtFine_{polygons.json,instanceIds.png,
            labelIds.png}``.
    Annotations are read from the polygon files, as detectron2's built-in names do; the metadata
    (8 thing classes, ``gt_dir``, ``evaluator_type``) is that of the built-in names.
    """
    DatasetCatalog.register(
        name,
        lambda: load_cityscapes_instances(image_dir, gt_dir, from_json=True, to_polygons=True),
    )
    MetadataCatalog.get(name).set(
        image_dir=image_dir,
        gt_dir=gt_dir,
        evaluator_type="cityscapes_instance",
        **_get_builtin_metadata("cityscapes"),
    )


# detectron2's register_all_ade20k: (images, label maps) under the root, by split name.
_ADE20K_SPLITS = {
    f"ade20k_sem_seg_{split}": (f"ADEChallengeData2016/images/{folder}",
                                f"ADEChallengeData2016/annotations_detectron2/{folder}")
    for split, folder in (("train", "training"), ("val", "validation"))
}
# The files of one Cityscapes image its loader reads, by kind.
_CITYSCAPES_GT_FILES = {
    "cityscapes": ("gtFine_polygons.json", "gtFine_instanceIds.png", "gtFine_labelIds.png"),
    "cityscapes_sem_seg": ("gtFine_polygons.json", "gtFine_labelTrainIds.png"),
}
_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def _builtin_relative_paths(name: str) -> Optional[Tuple[str, str]]:
    """For a detectron2 built-in COCO/Cityscapes/ADE20K name, its two paths relative to the root."""
    if name in _PREDEFINED_SPLITS_COCO["coco"]:
        image_root, json_file = _PREDEFINED_SPLITS_COCO["coco"][name]
        return json_file, image_root
    if name in _ADE20K_SPLITS:
        return _ADE20K_SPLITS[name]
    for key, (image_dir, gt_dir) in _RAW_CITYSCAPES_SPLITS.items():
        if name in (key.format(task="instance_seg"), key.format(task="sem_seg")):
            return image_dir, gt_dir
    return None


def _builtin_root(name: str, first_path: str) -> Optional[str]:
    """The root a built-in name was registered under, or None if it was re-registered elsewhere."""
    relative = _builtin_relative_paths(name)
    if relative is None:
        return None
    first_path = os.path.normpath(first_path)
    suffix = os.path.normpath(relative[0])
    if not first_path.endswith(suffix):
        return None
    return first_path[: -len(suffix)].rstrip(os.sep) or "."


def _kind(name: str) -> Optional[str]:
    """"coco", "cityscapes" (instances), "cityscapes_sem_seg", "sem_seg" (image and label
    directories) or None, from the metadata keys the dataset was registered with."""
    meta = MetadataCatalog.get(name)
    if hasattr(meta, "json_file") and hasattr(meta, "image_root"):
        return "coco"
    if hasattr(meta, "image_dir") and hasattr(meta, "gt_dir"):
        if meta.get("evaluator_type", None) == "cityscapes_sem_seg":
            return "cityscapes_sem_seg"
        return "cityscapes"
    if hasattr(meta, "image_root") and hasattr(meta, "sem_seg_root"):
        return "sem_seg"
    return None


def _paths(name: str, kind: str) -> Tuple[str, str]:
    """The two registered paths of a dataset of ``kind``: (json, images), (images, gtFine) or
    (images, label maps)."""
    meta = MetadataCatalog.get(name)
    if kind == "coco":
        return meta.json_file, meta.image_root
    if kind == "sem_seg":
        return meta.image_root, meta.sem_seg_root
    return meta.image_dir, meta.gt_dir


def _expected_layout(kind: str, first: str, second: str) -> List[str]:
    if kind == "coco":
        return [
            f"{first}    (COCO instances json: images, annotations, categories)",
            f"{second}/    (the images the json names, e.g. 000000000139.jpg)",
        ]
    if kind == "sem_seg":
        return [
            f"{first}/*.jpg    (images, e.g. ADE_train_00000001.jpg)",
            f"{second}/*.png    (one label map per image, same name: 8-bit class indices, 255 = "
            "ignore; for ADE20K made from ADEChallengeData2016/annotations by detectron2's "
            "datasets/prepare_ade20k_sem_seg.py)",
        ]
    layout = [f"{first}/{{city}}/{{city}}_{{seq}}_{{frame}}_leftImg8bit.png"]
    layout += [f"{second}/{{city}}/{{city}}_{{seq}}_{{frame}}_{suffix}"
               for suffix in _CITYSCAPES_GT_FILES[kind]]
    if kind == "cityscapes_sem_seg":
        layout.append("(labelTrainIds.png: made by cityscapesscripts, CITYSCAPES_DATASET=<root>/"
                      "cityscapes csCreateTrainIdLabelImgs; the official evaluation also reads "
                      "gtFine_labelIds.png and gtFine_instanceIds.png)")
    return layout


_ROOT_CHILD = {"coco": "coco/", "sem_seg": "ADEChallengeData2016/"}


def _not_found(name: str, kind: str, first: str, second: str, problems: List[str]):
    root = _builtin_root(name, first)
    if root is not None:
        value = os.environ.get(ROOT_VARIABLE)
        where = f"Looked in {os.path.abspath(root)} " + (
            f"(${ROOT_VARIABLE}={value})."
            if value is not None
            else f"(${ROOT_VARIABLE} is unset, so the default ./datasets)."
        )
        fix = (
            f"Put the dataset there, or set {ROOT_VARIABLE} to the directory that holds "
            f"{_ROOT_CHILD.get(kind, 'cityscapes/')} (export {ROOT_VARIABLE}=/path/to/datasets)."
        )
    else:
        where = f"Looked in {first} and {second} (the paths '{name}' was registered with)."
        fix = f"Register '{name}' again with the paths of your copy."
    shown = problems[:_MAX_LISTED]
    if len(problems) > len(shown):
        shown.append(f"... and {len(problems) - len(shown)} more")
    layout = _expected_layout(kind, first, second)
    return DatasetNotFoundError(
        f"Dataset '{name}' is missing or incomplete:\n  "
        + "\n  ".join(shown)
        + f"\n{where}\nExpected layout:\n  "
        + "\n  ".join(layout)
        + f"\n{fix}"
    )


def _coco_problems(json_file: str, image_root: str) -> List[str]:
    problems = []
    if not os.path.isfile(json_file):
        problems.append(f"annotation file {json_file} does not exist")
    if not os.path.isdir(image_root):
        problems.append(f"image directory {image_root} does not exist")
    elif not os.listdir(image_root):
        problems.append(f"image directory {image_root} is empty")
    return problems


def _sem_seg_problems(image_root: str, sem_seg_root: str) -> List[str]:
    """Both directories exist, there are images, and every image has its label map (same stem,
    .png); listed from the directories, no file is opened."""
    if not os.path.isdir(image_root):
        return [f"image directory {image_root} does not exist"]
    if not os.path.isdir(sem_seg_root):
        return [f"label directory {sem_seg_root} does not exist"]
    images = sorted(f for f in os.listdir(image_root) if f.lower().endswith(_IMAGE_EXTENSIONS))
    if not images:
        return [f"no images ({', '.join(_IMAGE_EXTENSIONS)}) in {image_root}"]
    labels = set(os.listdir(sem_seg_root))
    return [f"{os.path.join(sem_seg_root, os.path.splitext(f)[0] + '.png')} does not exist "
            f"(label map of {os.path.join(image_root, f)})"
            for f in images if os.path.splitext(f)[0] + ".png" not in labels]


def _cityscapes_problems(image_dir: str, gt_dir: str,
                         suffixes: Tuple[str, ...] = _CITYSCAPES_GT_FILES["cityscapes"]) -> List[str]:
    if not os.path.isdir(image_dir):
        return [f"image directory {image_dir} does not exist"]
    if not os.path.isdir(gt_dir):
        return [f"annotation directory {gt_dir} does not exist"]
    images = sorted(glob.glob(os.path.join(image_dir, "*", "*_leftImg8bit.png")))
    if not images:
        return [f"no {{city}}/*_leftImg8bit.png images under {image_dir}"]
    problems = []
    for image in images:
        city = os.path.basename(os.path.dirname(image))
        stem = os.path.basename(image)[: -len("leftImg8bit.png")]
        for suffix in suffixes:
            path = os.path.join(gt_dir, city, stem + suffix)
            if not os.path.isfile(path):
                problems.append(f"{path} does not exist (annotation of {image})")
    return problems


def check_dataset(name: str) -> None:
    """
    Check that the files registered dataset ``name`` needs are on disk.

    COCO-style datasets (metadata ``json_file`` + ``image_root``) need the json file and a non-empty
    image directory; Cityscapes-style ones (``image_dir`` + ``gt_dir``) need at least one image and,
    for every image, the gtFine files its loader reads (instances: polygons, instanceIds,
    labelIds; semantic: polygons, labelTrainIds); image/label directories (``image_root`` +
    ``sem_seg_root``, e.g. ADE20K) need at least one image and a label map for each (contents are
    checked when read: ``hpvit_d2.data.labels``). Datasets of no known kind pass.

    Raises:
        DatasetNotFoundError: naming the dataset, what is missing, the directory looked at, the
            expected layout and the variable (or registration) that moves it.
    """
    kind = _kind(name)
    if kind is None:
        return
    first, second = (os.path.abspath(p) for p in _paths(name, kind))
    if kind == "coco":
        problems = _coco_problems(first, second)
    elif kind == "sem_seg":
        problems = _sem_seg_problems(first, second)
    else:
        problems = _cityscapes_problems(first, second, _CITYSCAPES_GT_FILES[kind])
    if problems:
        raise _not_found(name, kind, first, second, problems)


def is_builtin(name: str) -> bool:
    """True for a detectron2 built-in COCO, Cityscapes or ADE20K name still at its built-in place."""
    kind = _kind(name)
    if kind is None:
        return False
    return _builtin_root(name, _paths(name, kind)[0]) is not None


def _is_number_list(value, length=None) -> bool:
    return (
        isinstance(value, (list, tuple))
        and (length is None or len(value) == length)
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    )


def _coco_format_problem(json_file: str, require_annotations: bool = True) -> Optional[str]:
    data, problem = read_json_object(json_file)
    if problem:
        return problem
    if not require_annotations and "annotations" not in data:
        data = dict(data, annotations=[])  # an image-info file, such as COCO's test-dev
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            return f"key '{key}' is missing or not a list"
    category_ids = set()
    for i, category in enumerate(data["categories"]):
        if not isinstance(category, dict) or "id" not in category or "name" not in category:
            return f"categories[{i}] needs 'id' and 'name'"
        category_ids.add(category["id"])
    problem = category_problem(data["categories"])
    if problem:
        return problem
    image_ids = set()
    for i, image in enumerate(data["images"]):
        missing = [
            k
            for k in ("id", "file_name", "height", "width")
            if not isinstance(image, dict) or k not in image
        ]
        if missing:
            return f"images[{i}] has no {', '.join(repr(k) for k in missing)}"
        image_ids.add(image["id"])
    problem = image_id_problem(data["images"])
    if problem:
        return problem
    for i, ann in enumerate(data["annotations"]):
        label = f"annotation id {ann.get('id')}" if isinstance(ann, dict) else f"annotations[{i}]"
        if not isinstance(ann, dict):
            return f"{label} is not an object"
        missing = [k for k in ("image_id", "category_id", "bbox") if k not in ann]
        if missing:
            return f"{label} has no {', '.join(repr(k) for k in missing)}"
        if ann["image_id"] not in image_ids:
            return f"{label} refers to image_id {ann['image_id']!r}, which is not in 'images'"
        if ann["category_id"] not in category_ids:
            return f"{label} has category_id {ann['category_id']!r}, which is not in 'categories'"
        if not _is_number_list(ann["bbox"], 4):
            return f"{label} has bbox {ann['bbox']!r}: expected [x, y, width, height]"
        segm = ann.get("segmentation")
        if segm is not None and not isinstance(segm, (list, dict)):
            return f"{label} has a segmentation that is neither polygons (list) nor RLE (dict)"
        if isinstance(segm, dict) and not ("counts" in segm and "size" in segm):
            return f"{label} has an RLE segmentation without 'counts' and 'size'"
        if ann.get("ignore", 0):
            return f"{label} has \"ignore\": {ann['ignore']!r}, which detectron2 does not support"
    ids = [ann.get("id") for ann in data["annotations"]]
    if len(set(ids)) != len(ids):
        return "annotation ids are not unique"
    return None


def _cityscapes_label_problem(label) -> Optional[str]:
    from cityscapesscripts.helpers.labels import name2label

    if not isinstance(label, str):
        return f"label {label!r} is not a string"
    base = label[: -len("group")] if label.endswith("group") and label not in name2label else label
    if base not in name2label:
        return f"label '{label}' is not a Cityscapes label (cityscapesscripts.helpers.labels)"
    return None


def _cityscapes_file_problem(path: str, semantic: bool = False) -> Optional[str]:
    """What is wrong with one polygons file (``semantic``: only the size is read from it)."""
    data, problem = read_json_object(path)
    if problem:
        return problem
    for key in ("imgHeight", "imgWidth"):
        if not isinstance(data.get(key), int):
            return f"key '{key}' is missing or not an integer"
    if semantic:
        return None
    if not isinstance(data.get("objects"), list):
        return "key 'objects' is missing or not a list"
    for i, obj in enumerate(data["objects"]):
        if not isinstance(obj, dict) or "label" not in obj or "polygon" not in obj:
            return f"objects[{i}] needs 'label' and 'polygon'"
        if "deleted" in obj:
            continue
        problem = _cityscapes_label_problem(obj["label"])
        if problem:
            return f"objects[{i}]: {problem}"
        polygon = obj["polygon"]
        if (
            not isinstance(polygon, list)
            or len(polygon) < 3
            or not all(_is_number_list(p, 2) for p in polygon)
        ):
            return f"objects[{i}] ('{obj['label']}'): polygon must be a list of at least 3 [x, y] points"
    return None


def diagnose_annotations(
    name: str, require_annotations: bool = True
) -> Optional[Tuple[str, str]]:
    """
    Find why the annotations of registered dataset ``name`` cannot be loaded, or were loaded
    empty (detectron2's COCO loader reads a missing ``images`` or ``annotations`` key as an
    empty list).

    Reads the COCO json (metadata ``json_file``) or every ``*_gtFine_polygons.json`` under the
    Cityscapes ``gt_dir`` and checks the structure the detectron2 loaders rely on (for semantic
    Cityscapes, the image size only). Meant for the failure path: it reads the files again.
    Image/label-directory datasets have no annotation file: None.

    Args:
        require_annotations: a COCO json without an ``annotations`` key is a problem; False
            accepts it (an image-info file, e.g. COCO's test-dev, for inference).
    Returns:
        ``(file, what is wrong)`` for the first problem found, or None if none is found.
    """
    kind = _kind(name)
    meta = MetadataCatalog.get(name)
    if kind == "coco":
        problem = _coco_format_problem(meta.json_file, require_annotations)
        return (meta.json_file, problem) if problem else None
    if kind in ("cityscapes", "cityscapes_sem_seg"):
        for path in sorted(glob.glob(os.path.join(meta.gt_dir, "*", "*_gtFine_polygons.json"))):
            problem = _cityscapes_file_problem(path, semantic=kind == "cityscapes_sem_seg")
            if problem:
                return path, problem
    return None
