"""
A COCO json as this project's checks read it: once per file (and change of it) in a process.

:func:`scan_coco_json` reads the json (or takes the one ``register_coco_json`` just read) and keeps
what the load-time checks need (:class:`CocoScan`: duplicate image ids, polygons pycocotools
cannot read, annotations on image ids that are not in ``images``), cached by path, size and
modification time: registering a dataset and loading it read the file once, besides the read of
detectron2's own loader (pycocotools).

:func:`category_problem` and :func:`image_id_problem`: ids detectron2's loader cannot use (mixed
or non-numeric category ids, repeated category ids, image ids of mixed types), in words.
"""
import json
import os
from typing import Dict, List, Optional, Tuple

from .annotations import is_short_polygon

__all__ = ["CocoScan", "category_problem", "image_id_problem", "read_json_object",
           "scan_coco_json"]

_SCANS: Dict[Tuple[str, int, int], "CocoScan"] = {}


def _is_whole_number(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _as_written(value) -> str:
    """How to write ``value`` as a number, for a message."""
    text = str(value).strip()
    return text if text.lstrip("-").isdigit() else "a whole number"


def category_problem(categories: List) -> Optional[str]:
    """What makes the ``categories`` of a COCO json unusable as class ids, or None."""
    names: Dict[int, str] = {}
    for i, category in enumerate(categories):
        if not isinstance(category, dict) or "id" not in category:
            continue
        cid = category["id"]
        if not _is_whole_number(cid):
            return (f"categories[{i}] has id {cid!r}, a {_kind(cid)}: COCO category ids are whole "
                    f"numbers; write {_as_written(cid)} without quotes (and so in the "
                    "annotations' category_id)")
        if cid in names:
            return (f"category id {cid} is given twice in 'categories' ('{names[cid]}' and "
                    f"'{category.get('name')}'): give each category its own id (and its "
                    "annotations that category_id)")
        names[cid] = category.get("name")
    return None


def _kind(value) -> str:
    names = {str: "string", float: "fraction", bool: "boolean"}
    return names.get(type(value), type(value).__name__)


def image_id_problem(images: List) -> Optional[str]:
    """Image ids of mixed types (a string among numbers), which pycocotools cannot sort."""
    ids = [(i, image["id"]) for i, image in enumerate(images)
           if isinstance(image, dict) and "id" in image]
    if all(_is_whole_number(v) for _, v in ids) or all(isinstance(v, str) for _, v in ids):
        return None
    i, value = next((i, v) for i, v in ids if not _is_whole_number(v))
    return (f"images[{i}] has id {value!r}, a {_kind(value)}, where other images have whole "
            f"numbers: COCO image ids are whole numbers; write {_as_written(value)} without "
            "quotes (and so in the annotations' image_id)")


def read_json_object(path: str):
    """(dict, None) or (None, what is wrong): the file must hold one JSON object."""
    try:
        with open(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        return None, f"not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})"
    except (OSError, UnicodeDecodeError) as e:
        return None, f"cannot be read ({e})"
    if not isinstance(data, dict):
        return None, f"the top level is a JSON {type(data).__name__}, not an object"
    return data, None


class CocoScan:
    """What the load-time checks need from one COCO json."""

    def __init__(self, data: dict):
        self.duplicate: Optional[Tuple[object, str, str]] = None
        first: Dict[object, str] = {}
        for image in data.get("images") or []:
            if not isinstance(image, dict) or "id" not in image:
                continue
            image_id, file_name = image["id"], image.get("file_name")
            try:
                seen = image_id in first
            except TypeError:  # an unhashable id: the loader fails on it and says so
                continue
            if not seen:
                first[image_id] = file_name
            elif first[image_id] != file_name and self.duplicate is None:
                self.duplicate = (image_id, first[image_id], file_name)
        annotations = [a for a in data.get("annotations") or [] if isinstance(a, dict)]
        self.short: List[int] = [  # indices of annotations with a polygon pycocotools can't read
            i for i, ann in enumerate(data.get("annotations") or [])
            if isinstance(ann, dict) and isinstance(ann.get("segmentation"), list)
            and any(isinstance(p, list) and is_short_polygon(p) for p in ann["segmentation"])
        ]
        orphans = [a for a in annotations if _hashable(a.get("image_id")) not in first]
        self.orphans = len(orphans)  # annotations on image ids not in 'images'
        self.first_orphan = (orphans[0].get("id"), orphans[0].get("image_id")) if orphans else None


def _hashable(value):
    try:
        hash(value)
        return value
    except TypeError:
        return repr(value)


def _key(json_file: str) -> Optional[Tuple[str, int, int]]:
    try:
        stat = os.stat(json_file)
    except OSError:
        return None
    return os.path.abspath(json_file), stat.st_size, stat.st_mtime_ns


def scan_coco_json(json_file: str, data: Optional[dict] = None) -> Optional[CocoScan]:
    """
    The :class:`CocoScan` of ``json_file``: from ``data`` when given (its content, just read),
    else from the cache, else read. None if the file cannot be read (its loader says why).
    """
    key = _key(json_file)
    if key is None:
        return None
    if data is None and key in _SCANS:
        return _SCANS[key]
    if data is None:
        data, problem = read_json_object(json_file)
        if problem:
            return None
    _SCANS[key] = scan = CocoScan(data)
    return scan
