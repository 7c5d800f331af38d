"""Bad training/evaluation data: each case is repaired (and counted) or rejected with an error
naming the file and annotation. Real files on disk, detectron2's real loaders and trainer."""
import json
import logging
import os
import subprocess
import sys
import uuid

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_train_loader
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as d2_utils
from detectron2.data import transforms as T
from detectron2.data.datasets import load_coco_json
from detectron2.engine import SimpleTrainer
from detectron2.structures import Boxes, BoxMode, Instances, PolygonMasks
from PIL import Image
from shapely import make_valid
from shapely.geometry import Polygon, box as shapely_box

from hpvit_d2.data.images import BadImageError, read_image_checked, read_image_size
from hpvit_d2.data.mapper import SafeDatasetMapper
from hpvit_d2.data.annotations import BadAnnotationError, clip_polygon_to_image
from hpvit_d2.data.datasets import DatasetNotFoundError
from hpvit_d2.data.sanitize import sanitize_dataset_dicts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RED = (220, 30, 30)
CLASSES = ["red", "green"]


# ---------------------------------------------------------------- helpers: data written to disk
def rgb_image(height=64, width=64, rect=(8, 8, 40, 40)):
    """(H, W, 3) uint8 dark noise with a red rectangle rect = (x0, y0, x1, y1)."""
    pixels = np.random.default_rng(0).integers(0, 60, size=(height, width, 3), dtype=np.uint8)
    x0, y0, x1, y1 = rect
    pixels[y0:y1, x0:x1] = RED
    return pixels


def square_annotation(ann_id, rect=(8, 8, 40, 40), category=0):
    """A detectron2 annotation dict for rect = (x0, y0, x1, y1): XYWH box + polygon."""
    x0, y0, x1, y1 = rect
    return {"id": ann_id, "category_id": category, "iscrowd": 0, "bbox_mode": BoxMode.XYWH_ABS,
            "bbox": [x0, y0, x1 - x0, y1 - y0],
            "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]]}


def record(path, height=64, width=64, annotations=None, image_id=1):
    return {"file_name": str(path), "height": height, "width": width, "image_id": image_id,
            "annotations": [square_annotation(image_id)] if annotations is None else annotations}


@pytest.fixture
def dataset_name():
    """A fresh dataset name with thing_classes red/green; unregistered afterwards."""
    name = f"bad_data_{uuid.uuid4().hex[:8]}"
    MetadataCatalog.get(name).set(thing_classes=CLASSES)
    yield name
    MetadataCatalog.remove(name)
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)


def save_png(path, pixels):
    Image.fromarray(pixels).save(path)
    return str(path)


def write_exif_jpeg(path, upright, orientation=6):
    """Store ``upright`` rotated so that applying EXIF ``orientation`` 6 gives it back."""
    assert orientation == 6
    raw = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = orientation
    raw.save(path, quality=95, exif=exif.tobytes())
    return str(path)


def first_batch(records, mapper=None, num_workers=0):
    """All records through detectron2's real train loader, one batch; by file name."""
    mapper = mapper or SafeDatasetMapper(is_train=True, augmentations=[], image_format="RGB",
                                         use_instance_mask=True)
    loader = build_detection_train_loader(dataset=records, mapper=mapper,
                                          total_batch_size=len(records), num_workers=num_workers,
                                          aspect_ratio_grouping=False)
    iterator = iter(loader)
    try:
        batch = next(iterator)
    finally:
        # Workers stopped here, not when the garbage collector finds the iterator (a raised
        # error's traceback keeps it alive): torch then waits out its 5 s join in a later test.
        if hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
    return {os.path.basename(d["file_name"]): d for d in batch}


def red_fraction(image_chw, box):
    """Fraction of pixels inside an XYXY box that are red, on a (3, H, W) uint8 tensor."""
    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    patch = image_chw[:, y0:y1, x0:x1].float()
    red = (patch[0] > 150) & (patch[1] < 90) & (patch[2] < 90)
    return float(red.float().mean())


# ------------------------------------------------------------------------- image formats (mapper)
def test_grayscale_png_becomes_rgb(tmp_path):
    gray = rgb_image()[..., 0]
    path = save_png(tmp_path / "gray.png", gray)
    mapper = SafeDatasetMapper(is_train=True, augmentations=[], image_format="RGB",
                               use_instance_mask=True)
    out = first_batch([record(path)], mapper)["gray.png"]
    assert out["image"].shape == (3, 64, 64)
    for c in range(3):
        assert torch.equal(out["image"][c], torch.from_numpy(gray))
    assert mapper.counts["grayscale"] == 1


def test_rgba_png_is_composited_over_black(tmp_path):
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., :3] = rgb_image()
    rgba[..., 3] = 255
    rgba[:, 32:, 3] = 0      # right half transparent
    rgba[:32, :32, 3] = 128  # top-left quarter half transparent
    path = save_png(tmp_path / "rgba.png", rgba)
    image = read_image_checked(path, "RGB")
    assert image.shape == (64, 64, 3)
    expected = np.rint(rgba[..., :3] * (rgba[..., 3:] / 255.0)).astype(np.uint8)
    np.testing.assert_array_equal(image, expected)
    assert (image[:, 32:] == 0).all() and (image[32:, :32] == rgba[32:, :32, :3]).all()
    mapper = SafeDatasetMapper(is_train=True, augmentations=[], image_format="BGR")
    out = first_batch([record(path)], mapper)["rgba.png"]
    bgr_chw = np.ascontiguousarray(expected[..., ::-1].transpose(2, 0, 1))
    assert torch.equal(out["image"], torch.from_numpy(bgr_chw))
    assert mapper.counts["alpha"] == 1


def test_16bit_png_scaled_to_8bit(tmp_path):
    values = (np.arange(64 * 64).reshape(64, 64) * 15).astype(np.uint16)  # 0..61425
    gray_path = save_png(tmp_path / "gray16.png", values)
    assert Image.open(gray_path).mode.startswith("I;16")
    expected = np.rint(values / 257.0).astype(np.uint8)
    # detectron2's own reader saturates almost every pixel at 255; ours keeps the full range
    stock = d2_utils.read_image(gray_path, "RGB")
    assert (stock == 255).mean() > 0.9
    mapper = SafeDatasetMapper(is_train=True, augmentations=[], image_format="RGB",
                               use_instance_mask=True)
    color = np.stack([values, values // 2, values // 3], axis=-1)
    color_path = str(tmp_path / "color16.png")
    assert cv2.imwrite(color_path, color[..., ::-1])  # cv2 writes 16-bit RGB PNGs, BGR order
    batch = first_batch([record(gray_path, image_id=1), record(color_path, image_id=2)], mapper)
    gray_out = batch["gray16.png"]["image"]
    for c in range(3):
        np.testing.assert_array_equal(gray_out[c].numpy(), expected)
    color_out = batch["color16.png"]["image"].numpy().transpose(1, 2, 0).astype(np.int32)
    assert np.abs(color_out - color / 257.0).max() <= 1.0  # high byte: within one level
    assert mapper.counts["16bit"] == 1


def test_exif_rotated_jpeg_annotations_line_up(tmp_path):
    upright = rgb_image(height=48, width=64, rect=(6, 26, 30, 44))  # red block bottom-left
    path = write_exif_jpeg(tmp_path / "rotated.jpg", upright)
    assert Image.open(path).size == (48, 64)  # stored sideways
    rec = record(path, height=48, width=64,
                 annotations=[square_annotation(5, rect=(6, 26, 30, 44))])
    mapper = SafeDatasetMapper(is_train=True, augmentations=[], image_format="RGB",
                               use_instance_mask=True)
    out = first_batch([rec], mapper)["rotated.jpg"]
    assert out["image"].shape == (3, 48, 64)
    box = out["instances"].gt_boxes.tensor[0]
    assert red_fraction(out["image"], box) > 0.95
    mask = out["instances"].gt_masks.polygons[0][0].reshape(-1, 2)
    assert red_fraction(out["image"], [*mask.min(0), *mask.max(0)]) > 0.95
    assert mapper.counts["exif_rotated"] == 1
    # annotated with the sensor's (unrotated) size: named error with the EXIF hint
    with pytest.raises(d2_utils.SizeMismatchError, match=r"rotated\.jpg.*EXIF orientation 6"):
        mapper(record(path, height=64, width=48))


def test_corrupt_and_truncated_images_are_named(tmp_path):
    good = save_png(tmp_path / "good.png", rgb_image())
    data = open(good, "rb").read()
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"this is not an image")
    with pytest.raises(BadImageError, match=r"truncated\.png.*truncated"):
        first_batch([record(truncated)])
    with pytest.raises(BadImageError, match=r"garbage\.jpg.*corrupt"):
        read_image_checked(str(garbage), "RGB")
    # through a worker process: the same type and message, not torch's "Caught BadImageError in
    # DataLoader worker process 0. Original Traceback ..." with the cause at the end
    with pytest.raises(BadImageError) as from_worker:
        first_batch([record(truncated)], num_workers=1)
    with pytest.raises(BadImageError) as in_process:
        first_batch([record(truncated)])
    assert str(from_worker.value) == str(in_process.value)
    assert str(from_worker.value).startswith("cannot decode image ")
    with pytest.raises(BadImageError, match=r"missing\.png.*does not exist"):
        read_image_checked(str(tmp_path / "missing.png"), "RGB")


def test_size_mismatch_names_the_file(tmp_path):
    path = save_png(tmp_path / "wide.png", rgb_image(height=64, width=80))
    mapper = SafeDatasetMapper(is_train=False, augmentations=[], image_format="RGB")
    with pytest.raises(d2_utils.SizeMismatchError, match=r"wide\.png.*80x64.*width=64.*Fix"):
        mapper(record(path, height=64, width=64))


def test_size_checked_by_the_mapper_only(tmp_path, dataset_name, caplog):
    """The sanitizer trusts height/width when they are given (no header read); the mapper,
    which decodes the image anyway, is where a wrong size is found."""
    path = save_png(tmp_path / "wide.png", rgb_image(height=64, width=80))
    with caplog.at_level(logging.INFO, logger="hpvit_d2"):
        (out,) = sanitize_dataset_dicts([record(path, height=64, width=64)], dataset_name)
    assert (out["height"], out["width"]) == (64, 64)
    assert "image sizes read from file headers" not in caplog.text
    mapper = SafeDatasetMapper(is_train=True, augmentations=[], image_format="RGB")
    with pytest.raises(d2_utils.SizeMismatchError, match=r"wide\.png.*80x64"):
        mapper(out)


def _assert_same_mapped(ours, stock):
    """Two mapper outputs are equal: same keys, equal tensors, equal Instances fields."""
    assert ours.keys() == stock.keys()
    for key, value in ours.items():
        other = stock[key]
        if isinstance(value, torch.Tensor):
            assert value.dtype == other.dtype and torch.equal(value, other), key
        elif isinstance(value, Instances):
            assert value.image_size == other.image_size
            assert value.get_fields().keys() == other.get_fields().keys()
            for name, field in value.get_fields().items():
                if isinstance(field, PolygonMasks):
                    pairs = zip(field.polygons, other.get(name).polygons)
                    assert all(len(a) == len(b) and all(np.array_equal(p, q) for p, q in zip(a, b))
                               for a, b in pairs), name
                elif isinstance(field, Boxes):
                    assert torch.equal(field.tensor, other.get(name).tensor), name
                else:
                    assert torch.equal(field, other.get(name)), name
        else:
            assert value == other, key


@pytest.mark.parametrize("image_format", ["RGB", "BGR"])
def test_mapper_output_equals_detectron2_mapper(tmp_path, image_format):
    """For ordinary images (and EXIF-rotated ones) SafeDatasetMapper is DatasetMapper."""
    plain = save_png(tmp_path / "plain.png", rgb_image(height=56, width=72, rect=(8, 10, 40, 30)))
    upright = rgb_image(height=48, width=64, rect=(6, 26, 30, 44))
    rotated = write_exif_jpeg(tmp_path / "rotated.jpg", upright)
    labels = np.zeros((56, 72), np.uint8)
    labels[10:30, 8:40] = 3
    label_file = save_png(tmp_path / "labels.png", labels)
    records = [
        dict(record(plain, height=56, width=72,
                    annotations=[square_annotation(1, (8, 10, 40, 30)),
                                 square_annotation(2, (50, 5, 70, 50), category=1)]),
             sem_seg_file_name=label_file),
        record(rotated, height=48, width=64, image_id=2,
               annotations=[square_annotation(3, (6, 26, 30, 44))]),
    ]
    augmentations = [T.ResizeShortestEdge(40, max_size=100), T.RandomFlip(prob=1.0)]
    for is_train in (True, False):
        kwargs = dict(is_train=is_train, augmentations=augmentations, image_format=image_format,
                      use_instance_mask=True)
        ours, stock = SafeDatasetMapper(**kwargs), DatasetMapper(**kwargs)
        for rec in records:
            _assert_same_mapped(ours(rec), stock(rec))
        assert "sem_seg" in ours(records[0]) and ("instances" in ours(records[0])) == is_train
        assert ours.counts == {"exif_rotated": 1}


def test_mapper_restores_detectron2_reader(tmp_path):
    """The checked reader replaces detectron2's only during a SafeDatasetMapper call."""
    import detectron2.data.dataset_mapper as d2_mapper

    good = save_png(tmp_path / "good.png", rgb_image())
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"not an image")
    mapper = SafeDatasetMapper(is_train=True, augmentations=[], image_format="RGB")
    mapper(record(good))
    assert d2_mapper.utils is d2_utils
    with pytest.raises(BadImageError, match=r"garbage\.png"):
        mapper(record(garbage))
    assert d2_mapper.utils is d2_utils


# ------------------------------------------------------------------- images (dataset level)
def test_small_image_dropped_for_training_kept_for_eval(tmp_path, dataset_name, caplog):
    small = save_png(tmp_path / "small.png", rgb_image(height=20, width=64, rect=(2, 2, 10, 10)))
    big = save_png(tmp_path / "big.png", rgb_image())
    dicts = [record(small, height=20, annotations=[square_annotation(1, (2, 2, 10, 10))]),
             record(big, image_id=2)]
    with caplog.at_level(logging.INFO, logger="hpvit_d2"):
        train = sanitize_dataset_dicts(dicts, dataset_name, filter_empty=True)
    assert [os.path.basename(d["file_name"]) for d in train] == ["big.png"]
    assert "images smaller than 32 px dropped: 1" in caplog.text
    evaluation = sanitize_dataset_dicts(dicts, dataset_name, filter_empty=False)
    assert len(evaluation) == 2
    assert "images smaller than 32 px kept (filter_empty=False): 1" in caplog.text


def test_min_image_size_is_checked_at_load_only(tmp_path, dataset_name):
    """The minimum size is a load-time policy: the mapper maps a small image it is given."""
    small = save_png(tmp_path / "small.png", rgb_image(height=20, width=64, rect=(2, 2, 10, 10)))
    small_record = record(small, height=20, annotations=[square_annotation(1, (2, 2, 10, 10))])
    mapper = SafeDatasetMapper(is_train=True, augmentations=[], image_format="RGB")
    out = mapper(small_record)
    assert out["image"].shape == (3, 20, 64) and len(out["instances"]) == 1
    assert not hasattr(mapper, "min_image_size") and not mapper.counts
    assert SafeDatasetMapper(is_train=False, augmentations=[], image_format="RGB")(
        small_record)["image"].shape == (3, 20, 64)


def test_image_without_annotations_dropped_for_training_kept_for_eval(tmp_path, dataset_name,
                                                                       caplog):
    path = save_png(tmp_path / "a.png", rgb_image())
    dicts = [record(path, annotations=[]), record(path, image_id=2),
             record(path, image_id=3, annotations=[dict(square_annotation(3), iscrowd=1)])]
    with caplog.at_level(logging.INFO, logger="hpvit_d2"):
        train = sanitize_dataset_dicts(dicts, dataset_name, filter_empty=True)
    assert [d["image_id"] for d in train] == [2]
    assert "images without annotations dropped: 2" in caplog.text
    assert [d["image_id"] for d in sanitize_dataset_dicts(dicts, dataset_name)] == [1, 2, 3]


def test_missing_size_read_from_header_and_missing_file_named(tmp_path, dataset_name):
    path = write_exif_jpeg(tmp_path / "r.jpg", rgb_image(height=48, width=64))
    rec = record(path)
    del rec["height"], rec["width"]
    (out,) = sanitize_dataset_dicts([rec], dataset_name)
    assert (out["height"], out["width"]) == (48, 64)  # as read: EXIF rotation applied
    assert read_image_size(path) == (48, 64) == read_image_checked(path, "RGB").shape[:2]
    with pytest.raises(DatasetNotFoundError,
                       match=r"1 of 2 image files do not exist.*nowhere\.png"):
        sanitize_dataset_dicts([rec, record(tmp_path / "nowhere.png")], dataset_name)


# -------------------------------------------------------------- annotations (dataset level)
def test_zero_area_box_dropped(tmp_path, dataset_name, caplog):
    path = save_png(tmp_path / "a.png", rgb_image())
    flat = dict(square_annotation(2), bbox=[10, 10, 0, 5])
    negative = dict(square_annotation(3), bbox=[10, 10, 5, -3])
    with caplog.at_level(logging.INFO, logger="hpvit_d2"):
        (out,) = sanitize_dataset_dicts(
            [record(path, annotations=[square_annotation(1), flat, negative])], dataset_name)
    assert [a["id"] for a in out["annotations"]] == [1]
    assert "zero-area boxes dropped: 1" in caplog.text
    assert "boxes with a negative width or height dropped: 1" in caplog.text


def test_polygon_with_fewer_than_three_points_dropped(tmp_path, dataset_name, caplog):
    path = save_png(tmp_path / "a.png", rgb_image())
    good = [8, 8, 40, 8, 40, 40]
    mixed = dict(square_annotation(1), segmentation=[[8, 8, 40, 8], good, [1, 2, 3, 4, 5]])
    only_short = dict(square_annotation(2), segmentation=[[8, 8, 40, 40]])
    collinear = dict(square_annotation(3), segmentation=[[8, 8, 20, 20, 30, 30]])
    with caplog.at_level(logging.INFO, logger="hpvit_d2"):
        (out,) = sanitize_dataset_dicts(
            [record(path, annotations=[mixed, only_short, collinear])], dataset_name)
    assert [a["id"] for a in out["annotations"]] == [1]
    assert out["annotations"][0]["segmentation"] == [good]
    assert "polygons with < 3 points dropped: 3" in caplog.text
    assert "zero-area polygons dropped: 1" in caplog.text
    assert "annotations without a valid polygon dropped: 2" in caplog.text
    # detectron2 alone: PolygonMasks fails on it, without saying which file or annotation
    with pytest.raises(Exception) as stock:
        d2_utils.annotations_to_instances([dict(only_short, bbox_mode=BoxMode.XYWH_ABS)], (64, 64))
    assert "a.png" not in str(stock.value)


@pytest.mark.parametrize("segmentation", [[8, 8, 40, 8, 40, 40], [[8, 8, 40, float("nan"), 9, 9]],
                                          [["a", "b", "c", "d", "e", "f"]]])
def test_malformed_polygon_rejected_with_file_and_annotation_id(tmp_path, dataset_name,
                                                               segmentation):
    """A flat list instead of a list of polygons, a NaN, text: named, not silently dropped."""
    path = save_png(tmp_path / "poly.png", rgb_image())
    bad = dict(square_annotation(12), segmentation=segmentation)
    with pytest.raises(BadAnnotationError,
                       match=r"poly\.png.*annotation id 12: a polygon is not a list of finite"):
        sanitize_dataset_dicts([record(path, annotations=[bad])], dataset_name)


def test_clip_polygon_matches_shapely():
    """Every part is a valid COCO polygon inside the image; together they are the intersection,
    also for self-intersecting input (repaired with make_valid)."""
    rng = np.random.default_rng(3)
    image = shapely_box(0, 0, 64, 48)
    invalid = 0
    for _ in range(80):
        points = rng.uniform(-30, 100, size=(int(rng.integers(3, 9)), 2))
        polygon = Polygon(points)
        invalid += not polygon.is_valid
        want = make_valid(polygon).intersection(image).area
        parts = clip_polygon_to_image(points.reshape(-1).tolist(), 64, 48)
        for part in parts:
            xy = np.reshape(part, (-1, 2))
            assert len(xy) >= 3 and Polygon(xy).area > 0
            assert xy.min() >= 0 and xy[:, 0].max() <= 64 and xy[:, 1].max() <= 48
        got = sum(Polygon(np.reshape(part, (-1, 2))).area for part in parts)
        assert abs(got - want) < 1e-6 * max(1.0, want)
        if polygon.is_valid:
            assert abs(got - polygon.intersection(image).area) < 1e-6 * max(1.0, want)
    assert invalid > 10  # self-intersecting input is exercised


def test_clipped_polygon_may_become_several(tmp_path, dataset_name, caplog):
    """A U whose base lies outside the image is clipped into its two prongs (COCO allows an
    annotation of several polygons); a bow-tie crossing the border is repaired, not mangled."""
    path = save_png(tmp_path / "a.png", rgb_image())
    u_shape = [10, -20, 50, -20, 50, 30, 40, 30, 40, -10, 20, -10, 20, 30, 10, 30]
    bowtie = [-10, 0, 40, 40, 40, 0, -10, 20]  # edges cross at (20, 16)
    annotations = [dict(square_annotation(1), bbox=[10, -20, 40, 50], segmentation=[u_shape]),
                   dict(square_annotation(2), bbox=[-10, 0, 50, 40], segmentation=[bowtie])]
    with caplog.at_level(logging.INFO, logger="hpvit_d2"):
        (out,) = sanitize_dataset_dicts([record(path, annotations=annotations)], dataset_name)
    prongs, repaired = out["annotations"]
    assert prongs["bbox"] == [10, 0, 40, 30]
    assert len(prongs["segmentation"]) == 2
    assert sorted(Polygon(np.reshape(p, (-1, 2))).bounds for p in prongs["segmentation"]) == [
        (10, 0, 20, 30), (40, 0, 50, 30)]
    rle = mask_util.merge(mask_util.frPyObjects(prongs["segmentation"], 64, 64))
    assert abs(float(mask_util.area(rle)) - 2 * 10 * 30) <= 2 * (10 + 30) + 4
    want = make_valid(Polygon(np.reshape(bowtie, (-1, 2)))).intersection(shapely_box(0, 0, 64, 64))
    got = [Polygon(np.reshape(p, (-1, 2))) for p in repaired["segmentation"]]
    assert all(p.is_valid for p in got)
    assert sum(p.area for p in got) == pytest.approx(want.area)
    assert "polygons clipped to the image: 2" in caplog.text


def test_mask_and_box_outside_image_clipped_or_dropped(tmp_path, dataset_name, caplog):
    path = save_png(tmp_path / "a.png", rgb_image())
    partly = dict(square_annotation(1), bbox=[40, 40, 40, 40],
                  segmentation=[[40, 40, 80, 40, 80, 80, 40, 80]])
    outside = dict(square_annotation(2), bbox=[100, 100, 10, 10],
                   segmentation=[[100, 100, 110, 100, 110, 110]])
    box_inside_mask_outside = dict(square_annotation(3), bbox=[0, 0, 10, 10],
                                   segmentation=[[-20, -20, -10, -20, -10, -10]])
    empty_rle = dict(square_annotation(4),
                     segmentation=mask_util.encode(np.zeros((64, 64), np.uint8, order="F")))
    with caplog.at_level(logging.INFO, logger="hpvit_d2"):
        (out,) = sanitize_dataset_dicts(
            [record(path, annotations=[partly, outside, box_inside_mask_outside, empty_rle])],
            dataset_name)
    (kept,) = out["annotations"]
    assert kept["id"] == 1 and kept["bbox"] == [40, 40, 24, 24]
    assert Polygon(np.reshape(kept["segmentation"][0], (-1, 2))).area == pytest.approx(24 * 24)
    for text in ("boxes clipped to the image: 1", "boxes outside the image dropped: 1",
                 "polygons outside the image dropped: 1", "empty mask dropped: 1"):
        assert text.replace("empty mask", "annotations with an empty mask") in caplog.text
    assert partly["bbox"] == [40, 40, 40, 40]  # the input is not modified
    # an RLE of another size cannot be placed: named error
    wrong_size = dict(square_annotation(9),
                      segmentation=mask_util.encode(np.ones((32, 64), np.uint8, order="F")))
    with pytest.raises(BadAnnotationError, match=r"a\.png.*annotation id 9.*32x64.*64x64"):
        sanitize_dataset_dicts([record(path, annotations=[wrong_size])], dataset_name)


def test_unknown_category_rejected_with_file_and_annotation_id(tmp_path, dataset_name):
    path = save_png(tmp_path / "cats.png", rgb_image())
    bad = dict(square_annotation(42), category_id=7)
    with pytest.raises(BadAnnotationError) as err:
        sanitize_dataset_dicts([record(path, annotations=[square_annotation(1), bad])],
                               dataset_name)
    message = str(err.value)
    assert "cats.png" in message and "annotation id 42" in message
    assert "category_id 7" in message and "0..1" in message and "0=red, 1=green" in message


def test_annotation_id_found_in_json_when_loader_drops_it(tmp_path, dataset_name):
    """detectron2's built-in COCO registration drops annotation ids: they are looked up."""
    save_png(tmp_path / "img.png", rgb_image())
    coco = {"images": [{"id": 3, "file_name": "img.png", "height": 64, "width": 64}],
            "annotations": [{"id": 77, "image_id": 3, "category_id": 1, "bbox": [8, 8, 32, 32],
                             "area": 1024, "iscrowd": 0,
                             "segmentation": [[8, 8, 40, 8, 40, 40, 8, 40]]}],
            "categories": [{"id": 1, "name": "red"}, {"id": 2, "name": "green"}]}
    json_path = tmp_path / "ann.json"
    json_path.write_text(json.dumps(coco))
    dicts = load_coco_json(str(json_path), str(tmp_path), dataset_name)
    MetadataCatalog.get(dataset_name).set(json_file=str(json_path))
    assert "id" not in dicts[0]["annotations"][0]
    dicts[0]["annotations"][0]["category_id"] = 5  # e.g. metadata of another class list
    with pytest.raises(BadAnnotationError, match=r"img\.png.*annotation id 77.*category_id 5"):
        sanitize_dataset_dicts(dicts, dataset_name)


# ----------------------------------------------------------------- end to end: one train step
def _write_bad_coco(root):
    """A COCO json with every repairable bad case; returns its path."""
    images, annotations = [], []

    def add(name, height, width, anns):
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": name, "height": height, "width": width})
        for ann in anns:
            annotations.append(dict(ann, id=len(annotations) + 1, image_id=image_id, iscrowd=0,
                                    area=100.0))

    def square(x0, y0, x1, y1, cat=1):
        return {"category_id": cat, "bbox": [x0, y0, x1 - x0, y1 - y0],
                "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]]}

    save_png(os.path.join(root, "gray.png"), rgb_image()[..., 0])
    add("gray.png", 64, 64, [square(8, 8, 40, 40)])
    rgba = np.dstack([rgb_image(), np.full((64, 64), 200, np.uint8)])
    save_png(os.path.join(root, "rgba.png"), rgba)
    add("rgba.png", 64, 64,
        [square(8, 8, 40, 40), dict(square(8, 8, 40, 40), bbox=[5, 5, 0, 9])])
    save_png(os.path.join(root, "gray16.png"), rgb_image()[..., 0].astype(np.uint16) * 257)
    add("gray16.png", 64, 64, [square(8, 8, 40, 40, cat=2),
                                     dict(square(8, 8, 40, 40), segmentation=[[1, 1, 9, 9]])])
    write_exif_jpeg(os.path.join(root, "exif.jpg"), rgb_image(48, 64, rect=(6, 26, 30, 44)))
    add("exif.jpg", 48, 64, [square(6, 26, 30, 44)])
    save_png(os.path.join(root, "small.png"), rgb_image(20, 20, rect=(2, 2, 10, 10)))
    add("small.png", 20, 20, [square(2, 2, 10, 10)])
    save_png(os.path.join(root, "empty.png"), rgb_image())
    add("empty.png", 64, 64, [])
    save_png(os.path.join(root, "outside.png"), rgb_image(rect=(40, 40, 64, 64)))
    add("outside.png", 64, 64, [square(40, 40, 90, 90, cat=2), square(100, 100, 120, 120)])
    path = os.path.join(root, "instances.json")
    with open(path, "w") as f:
        json.dump({"images": images, "annotations": annotations,
                   "categories": [{"id": 1, "name": "red"}, {"id": 2, "name": "green"}]}, f)
    return path


@pytest.fixture(scope="module")
def tiny_model_cfg(tmp_path_factory):
    """The model of the engine tests' tiny config (its dataset registration is undone)."""
    registered = set(DatasetCatalog.list())
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HPVIT_TEST_COCO", str(tmp_path_factory.mktemp("unused")))
        cfg = LazyConfig.load(os.path.join(ROOT, "tests", "configs", "engine_tiny.py"))
    for name in set(DatasetCatalog.list()) - registered:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    return cfg.model


def test_training_step_on_all_bad_cases(tmp_path, dataset_name, tiny_model_cfg, caplog):
    json_path = _write_bad_coco(str(tmp_path))
    MetadataCatalog.remove(dataset_name)
    dicts = load_coco_json(json_path, str(tmp_path), dataset_name, extra_annotation_keys=["id"])
    with caplog.at_level(logging.INFO, logger="hpvit_d2"):
        dicts = sanitize_dataset_dicts(dicts, dataset_name, filter_empty=True)
    names = sorted(os.path.basename(d["file_name"]) for d in dicts)
    assert names == ["exif.jpg", "gray.png", "gray16.png", "outside.png", "rgba.png"]
    summary = [r.message for r in caplog.records if "Sanitized dataset" in r.message]
    assert len(summary) == 1 and "7 images in, 5 kept" in summary[0]

    mapper = SafeDatasetMapper(is_train=True, augmentations=[], image_format="RGB",
                               use_instance_mask=True)
    loader = build_detection_train_loader(dataset=dicts, mapper=mapper, total_batch_size=5,
                                          num_workers=0, aspect_ratio_grouping=False)
    model = instantiate(tiny_model_cfg)
    trainer = SimpleTrainer(model, loader, torch.optim.SGD(model.parameters(), lr=1e-3))
    trainer.train(0, 1)
    losses = trainer.storage.latest()
    assert np.isfinite(losses["total_loss"][0])
    assert {"grayscale", "alpha", "16bit", "exif_rotated"} <= set(mapper.counts)

    # what cannot be repaired stops with an error naming the file (and annotation):
    # an unknown category before the first iteration, a truncated image at the first iteration
    bad_category = [dict(d, annotations=[dict(a, category_id=9) for a in d["annotations"]])
                    if d["file_name"].endswith("outside.png") else d for d in dicts]
    with pytest.raises(BadAnnotationError, match=r"outside\.png.*annotation id \d+.*category_id 9"):
        sanitize_dataset_dicts(bad_category, dataset_name, filter_empty=True)
    rgba = os.path.join(str(tmp_path), "rgba.png")
    data = open(rgba, "rb").read()
    with open(rgba, "wb") as f:
        f.write(data[: len(data) // 2])
    loader = build_detection_train_loader(dataset=dicts, mapper=mapper, total_batch_size=5,
                                          num_workers=0, aspect_ratio_grouping=False)
    trainer = SimpleTrainer(model, loader, torch.optim.SGD(model.parameters(), lr=1e-3))
    with pytest.raises(BadImageError, match=r"rgba\.png.*truncated"):
        trainer.train(0, 1)


# ------------------------------------ the real tiny config: own COCO data through the commands
TINY = "mask_rcnn_hpvit_tiny.py"


def write_coco_dataset(root, images, categories=("red", "green")):
    """
    A COCO dataset under ``root`` (``images/`` and ``instances.json``); ``images`` is a list of
    (id, file name, pixels (H, W, 3) or None to write no file, [annotation dicts without ids]).
    Returns (json path, image directory).
    """
    image_dir = os.path.join(str(root), "images")
    os.makedirs(image_dir, exist_ok=True)
    entries, annotations = [], []
    for image_id, name, pixels, anns in images:
        height, width = pixels.shape[:2] if pixels is not None else (64, 64)
        if pixels is not None:
            Image.fromarray(pixels).save(os.path.join(image_dir, name))
        entries.append({"id": image_id, "file_name": name, "height": height, "width": width})
        for ann in anns:
            annotations.append(dict({"iscrowd": 0, "area": 100.0, "category_id": 1}, **ann,
                                    id=len(annotations) + 1, image_id=image_id))
    path = os.path.join(str(root), "instances.json")
    with open(path, "w") as f:
        json.dump({"images": entries, "annotations": annotations,
                   "categories": [{"id": i + 1, "name": n} for i, n in enumerate(categories)]}, f)
    return path, image_dir


def coco_square(x0=8, y0=8, x1=40, y1=40, category=1):
    return {"category_id": category, "bbox": [x0, y0, x1 - x0, y1 - y0],
            "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]]}


def good_images(count=4, first_id=1):
    """Valid 64x64 images with one red square each."""
    return [(first_id + i, f"good{i}.png", rgb_image(), [coco_square(category=1 + i % 2)])
            for i in range(count)]


def train_tiny(tmp_path, json_file, image_dir, *overrides, max_iter=1, command="train_net.py"):
    """``train_net.py`` on the tiny config and this data, in a fresh process (as a user runs it):
    the CompletedProcess, with ``error_lines`` (stderr lines starting with ``error:``)."""
    argv = ["--config-file", TINY, "--register-coco", "own", json_file, image_dir,
            f"train.output_dir={tmp_path / 'run'}", f"train.max_iter={max_iter}",
            "dataloader.train.dataset.names=own", "dataloader.test.dataset.names=own",
            "dataloader.train.num_workers=0", "dataloader.test.num_workers=0",
            "model.roi_heads.num_classes=2", *overrides]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore",
               HPVIT_DATA=str(tmp_path / "data"))
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "projects", "HPViT", command), *argv],
                          capture_output=True, text=True, env=env, timeout=600)
    proc.error_lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    return proc


def assert_one_error_line(proc, tmp_path):
    """Exit 2, one ``error:`` line of at most ~300 characters (the test's tmp dir counted as
    5), no traceback; returns the line."""
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(proc.error_lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert len(proc.error_lines[0].replace(str(tmp_path), "<tmp>")) <= 300, proc.error_lines[0]
    return proc.error_lines[0]


def test_duplicate_image_ids_refused(tmp_path):
    """Before: a.jpg was dropped without a word and its annotations trained on b.png."""
    json_file, image_dir = write_coco_dataset(tmp_path, [
        (1, "a.jpg", rgb_image(), [coco_square()]),
        (1, "b.png", rgb_image(), [coco_square(category=2)]), *good_images(first_id=2)])
    line = assert_one_error_line(train_tiny(tmp_path, json_file, image_dir), tmp_path)
    assert line.startswith("error: duplicate image id 1 in ")
    assert json_file in line and "'a.jpg'" in line and "'b.png'" in line


@pytest.mark.parametrize("case", ["two_point_polygon", "thin_image"])
def test_evaluation_after_training_is_safe_on_what_training_accepts(tmp_path, case):
    """Before: training went through, then COCOEvaluator crashed: inside pycocotools on the
    2-point polygon (read as a box), with `height and width must be > 0` on the 1x2000 image."""
    if case == "two_point_polygon":
        short = dict(coco_square(), segmentation=[[8, 8, 40, 40], [8, 8, 40, 8, 40, 40]])
        bad = [(90, "short.png", rgb_image(), [short, coco_square(category=2)])]
    else:
        bad = [(90, "thin.png", rgb_image(1, 2000, rect=(0, 0, 100, 1)), [])]
    json_file, image_dir = write_coco_dataset(tmp_path, good_images() + bad)
    proc = train_tiny(tmp_path, json_file, image_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = os.path.join(str(tmp_path), "run", "inference", "coco_instances_results.json")
    assert os.path.isfile(results)


def rle_of(mask):
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return dict(rle, counts=rle["counts"].decode("ascii"))


def test_rle_whose_counts_exceed_the_image_refused(tmp_path):
    """Before: counts encoded for a 5000x6000 mask, labelled 64x64, passed the sanitizer with an
    area of 30M pixels, and pycocotools decoded them into the 64x64 buffer."""
    garbage = dict(rle_of(np.ones((5000, 6000))), size=[64, 64])
    assert float(mask_util.area(garbage)) == 30e6  # what the old check read
    bad = (9, "garbage.png", rgb_image(), [dict(coco_square(), segmentation=garbage)])
    json_file, image_dir = write_coco_dataset(tmp_path, good_images() + [bad])
    line = assert_one_error_line(train_tiny(tmp_path, json_file, image_dir), tmp_path)
    assert "garbage.png" in line and "annotation id 5" in line
    assert "cover 30000000 pixels, but a 64x64 image has 4096" in line


def test_valid_rle_masks_train_and_evaluate_with_the_polygon_config(tmp_path):
    """Before: a non-crowd RLE mask under the configs' instance_mask_format=polygon died in the
    loader (`Cannot convert segmentation of type dict`), with no hint of the format."""
    mask = np.zeros((64, 64), bool)
    mask[8:40, 8:40] = True
    rle = (9, "rle.png", rgb_image(), [dict(coco_square(), segmentation=rle_of(mask))])
    json_file, image_dir = write_coco_dataset(tmp_path, good_images(3) + [rle])
    # Two iterations of the config's batch of 2: one shuffled pass over the four images.
    proc = train_tiny(tmp_path, json_file, image_dir, max_iter=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "images with RLE masks mapped as bitmasks" in proc.stdout + proc.stderr


# --------------------------------------------------- one image reader: pixel cap, demo, predictor
def write_png_declaring(path, width, height):
    """A tiny PNG (1x1 pixels of data) whose header declares width x height."""
    import zlib

    Image.new("L", (1, 1)).save(path)
    data = bytearray(open(path, "rb").read())
    data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    open(path, "wb").write(bytes(data))
    return str(path)


def test_pixel_cap_checked_from_the_header_named_and_changeable(tmp_path, monkeypatch):
    """Before: a 10000x10000 header in a few hundred bytes was decoded (Pillow warns only)."""
    bomb = write_png_declaring(tmp_path / "bomb.png", 10000, 10000)
    assert os.path.getsize(bomb) < 1000
    with pytest.raises(BadImageError) as error:
        read_image_checked(bomb, "RGB")
    message = str(error.value)
    assert "bomb.png" in message and "10000x10000 (100.0 megapixels)" in message
    assert "50-megapixel cap" in message and "HPVIT_MAX_IMAGE_PIXELS=100000000" in message
    small = save_png(tmp_path / "small.png", rgb_image())
    monkeypatch.setenv("HPVIT_MAX_IMAGE_PIXELS", "1000")
    with pytest.raises(BadImageError, match=r"small\.png' is 64x64 .*0\.001-megapixel cap"):
        read_image_checked(small, "RGB")
    monkeypatch.setenv("HPVIT_MAX_IMAGE_PIXELS", "0")  # no cap
    assert read_image_checked(small, "RGB").shape == (64, 64, 3)
    assert read_image_checked(small, "RGB", max_pixels=4096).shape == (64, 64, 3)


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    from hpvit_d2.model_zoo import get_config

    torch.manual_seed(0)
    model = instantiate(get_config(TINY).model)
    path = tmp_path_factory.mktemp("weights") / "model_final.pth"
    torch.save({"model": model.state_dict()}, path)
    return str(path)


def test_demo_reads_with_the_project_reader_and_goes_on_past_bad_images(tmp_path, tiny_weights,
                                                                        capsys):
    """Before: detectron2's read_image drew the 16-bit PNG all white and the float TIFF all black
    without a word, and the 1x2000 image stopped the loop (`height and width must be > 0`)
    before predictions.json was written."""
    from hpvit_d2.cli import demo
    from hpvit_d2.cli.common import run

    inputs = tmp_path / "in"
    inputs.mkdir()
    save_png(inputs / "a_good.png", rgb_image(96, 128))
    gradient = np.tile(np.linspace(0, 32768, 128).astype(np.uint16), (96, 1))
    Image.fromarray(gradient).save(inputs / "b_gray16.png")
    Image.fromarray(np.full((96, 128), 0.5, np.float32)).save(inputs / "c_float.tif")
    save_png(inputs / "d_thin.png", rgb_image(1, 2000, rect=(0, 0, 10, 1)))
    write_png_declaring(inputs / "e_bomb.png", 10000, 10000)
    out = tmp_path / "vis"
    code = run(demo.main, ["--config-file", TINY, "--input", str(inputs), "--output", str(out),
                           "--weights", tiny_weights])
    err = capsys.readouterr().err
    assert code == 1, err[-3000:]  # EXIT_FAILED_INPUTS: some inputs failed, the others written
    assert sorted(os.listdir(out)) == ["a_good.png", "b_gray16.png", "d_thin.png",
                                       "predictions.json"]
    assert isinstance(json.loads((out / "predictions.json").read_text()), list)
    assert "skipping " + str(inputs / "c_float.tif") + ": image" in err and "floating-point" in err
    assert "skipping " + str(inputs / "e_bomb.png") + ": image" in err and "megapixel cap" in err
    assert "2 input(s) failed" in err
    drawn = np.asarray(Image.open(out / "b_gray16.png"))
    assert drawn.shape == (96, 128, 3) and 50 < drawn.mean() < 80  # 0..128 after /257, not 255


def test_demo_with_no_readable_input_is_one_error_line_before_the_model(tmp_path, capsys):
    """Before: the model was built and loaded, then exit 1, the code of 'some inputs failed'."""
    from hpvit_d2.cli import demo
    from hpvit_d2.cli.common import run

    (tmp_path / "notes.png").write_text("not an image")
    (tmp_path / "empty.jpg").write_bytes(b"")
    out = tmp_path / "vis"
    # Weights that do not exist: an error about them would mean the model was built first.
    code = run(demo.main, ["--config-file", TINY, "--input", str(tmp_path / "notes.png"),
                           str(tmp_path / "empty.jpg"), "--output", str(out),
                           "--weights", str(tmp_path / "nosuch.pth")])
    err = capsys.readouterr().err
    assert code == 2, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors == [f"error: --input: none of the 2 input(s) is a readable image "
                      f"({tmp_path / 'notes.png'}, {tmp_path / 'empty.jpg'})"]
    assert f"skipping {tmp_path / 'notes.png'}: not a readable image" in err
    assert "nosuch.pth" not in err and not out.exists()


def test_predictor_reads_files_with_the_project_reader(tmp_path, tiny_weights):
    from hpvit_d2.model_zoo import get_config
    from hpvit_d2.predictor import LazyPredictor

    cfg = get_config(TINY)
    cfg.train.init_checkpoint = tiny_weights
    predictor = LazyPredictor(cfg)
    gradient = np.tile(np.linspace(0, 32768, 64).astype(np.uint16), (48, 1))
    Image.fromarray(gradient).save(tmp_path / "gray16.png")
    from_file = predictor(str(tmp_path / "gray16.png"))
    from_array = predictor(read_image_checked(str(tmp_path / "gray16.png"), "BGR"))
    assert from_file.image_size == (48, 64)
    assert torch.equal(from_file.pred_boxes.tensor, from_array.pred_boxes.tensor)
    Image.fromarray(np.zeros((8, 8), np.float32)).save(tmp_path / "float.tif")
    with pytest.raises(BadImageError, match=r"float\.tif.*floating-point"):
        predictor(str(tmp_path / "float.tif"))
    thin = predictor(save_png(tmp_path / "thin.png", rgb_image(1, 2000, rect=(0, 0, 10, 1))))
    assert thin.image_size == (1, 2000)  # resized to 1x256, not 0x256


# ----------------------------------------------- error format: one line, cause first, exit 2
def test_image_file_missing_on_disk_is_one_error_line(tmp_path):
    """Before: a ValueError whose message listed the files on several lines, with a traceback."""
    json_file, image_dir = write_coco_dataset(
        tmp_path, good_images() + [(9, "missing.png", None, [coco_square()])])
    line = assert_one_error_line(train_tiny(tmp_path, json_file, image_dir), tmp_path)
    assert line.startswith("error: 1 of 5 image files do not exist in dataset 'own', first ")
    assert "missing.png" in line


def test_empty_annotation_list_is_one_error_line(tmp_path):
    """Before: `ValueError: No images left ... after filtering` with a traceback."""
    json_file, image_dir = write_coco_dataset(
        tmp_path, [(i, name, pixels, []) for i, name, pixels, _ in good_images()])
    line = assert_one_error_line(train_tiny(tmp_path, json_file, image_dir), tmp_path)
    assert line.startswith("error: no annotations: dataset 'own' (")
    assert json_file in line and "empty annotation list" in line


@pytest.mark.parametrize("case", ["size", "exif"])
def test_size_or_exif_mismatch_from_a_loader_worker_is_one_error_line(tmp_path, case):
    """Before: detectron2's SizeMismatchError (not a user error) re-raised by torch from the
    worker: a traceback, and a 2,300-character message with the cause at its end."""
    if case == "size":
        bad = (9, "wide.png", rgb_image(64, 80), [coco_square()])
    else:  # stored sideways with EXIF orientation 6; the json has the sensor's 48x64
        bad = (9, "rotated.jpg", None, [coco_square(8, 8, 30, 30)])
    json_file, image_dir = write_coco_dataset(tmp_path, good_images(3) + [bad])
    if case == "exif":
        write_exif_jpeg(os.path.join(image_dir, "rotated.jpg"), rgb_image(64, 48))
    data = json.load(open(json_file))
    height, width = {"size": (64, 64), "exif": (48, 64)}[case]  # the file's 64x80 / the sensor's
    data["images"][-1].update(height=height, width=width)
    json.dump(data, open(json_file, "w"))
    proc = train_tiny(tmp_path, json_file, image_dir, "dataloader.train.num_workers=1")
    line = assert_one_error_line(proc, tmp_path)
    assert line.startswith("error: image size mismatch: ")
    assert "DataLoader worker" not in line
    if case == "size":
        assert "wide.png' (image_id 9) is 80x64 (width x height) as read" in line
    else:
        assert "rotated.jpg" in line and "EXIF orientation 6" in line


def test_rle_counts_decoded_as_pycocotools_encodes():
    from hpvit_d2.data.annotations import rle_counts

    rng = np.random.default_rng(1)
    for _ in range(50):
        height, width = (int(v) for v in rng.integers(1, 120, 2))
        mask = rng.random((height, width)) < rng.random()
        runs = rle_counts(rle_of(mask)["counts"])
        assert sum(runs) == height * width and min(runs) >= 0
        assert sum(runs[1::2]) == mask.sum()
    assert rle_counts("not rle ~") is None and rle_counts(3) is None


def test_non_empty_reaches_inside_random_apply_and_keeps_the_ade20k_recipe_running():
    """Before: the semseg configs' RandomApply (photometric jitter) was wrapped like a plain
    augmentation, and detectron2 failed on it (`needs input attribute 'args'`)."""
    from hpvit_d2.data.transforms import NonEmptyAugmentation, non_empty

    thin_resize = T.ResizeShortestEdge(256, max_size=256)
    wrapped = non_empty([T.RandomApply(thin_resize, prob=1.0),
                         T.AugmentationList([T.RandomFlip(prob=1.0), thin_resize]),
                         T.RandomApply(T.RandomBrightness(0.9, 1.1), prob=1.0)])
    assert isinstance(wrapped[0].aug, NonEmptyAugmentation)
    assert isinstance(wrapped[1].augs[1], NonEmptyAugmentation)
    assert non_empty(wrapped)[0].aug is wrapped[0].aug  # idempotent
    thin = T.AugInput(np.zeros((1, 2000, 3), np.uint8))
    T.AugmentationList(wrapped[:1])(thin)
    assert thin.image.shape[:2] == (1, 256)  # detectron2 alone: 0x256, then PIL fails

    cfg = LazyConfig.load(os.path.join(ROOT, "hpvit_d2", "configs", "ade20k", "common.py"))
    augmentations = non_empty(instantiate(cfg.dataloader.train.mapper.augmentations))
    rng = np.random.default_rng(0)
    aug_input = T.AugInput(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8),
                           sem_seg=rng.integers(0, 150, (300, 400)).astype(np.uint8))
    T.AugmentationList(augmentations)(aug_input)
    assert aug_input.image.shape[:2] == aug_input.sem_seg.shape
    assert max(aug_input.sem_seg.shape) <= 512  # the recipe's crop
