"""
Registration of this project's datasets in detectron2's catalogs, as
``detectron2.data.datasets.builtin`` registers detectron2's: :func:`register_all_shapes` is called
once when ``hpvit_d2.data`` is imported, and calling it again changes nothing.

Registered (see ``hpvit_d2.data.shapes.SHAPES_SPLITS``): ``hpvit_shapes_train``,
``hpvit_shapes_val``, ``hpvit_shapes_test`` (held out), ``hpvit_shapes_train_mini``,
``hpvit_shapes_val_mini``, COCO-format
instance segmentation with 4 classes (circle, rectangle, triangle, star) and
``evaluator_type="coco"``; and their semantic versions (``hpvit_d2.data.shapes_semseg``)
``hpvit_shapes_sem_seg_{train,val,test,train_mini,val_mini}``: the same images with label maps of 5
classes (background, then the 4 shapes), ignore value 255, ``evaluator_type="sem_seg"``. Their
files are generated on first use under ``$HPVIT_DATA``.
"""
import os
from typing import List

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.catalog import Metadata
from detectron2.data.datasets import load_coco_json

from .shapes import IMAGE_DIR, SHAPE_CLASSES, SHAPES_SPLITS, ensure_shapes_split
from .shapes_semseg import (
    SEM_SEG_CLASSES,
    SEM_SEG_IGNORE_VALUE,
    SHAPES_SEM_SEG_SPLITS,
    ensure_shapes_sem_seg_split,
    load_shapes_sem_seg,
)

__all__ = ["register_all_shapes"]

_SHAPE_COLORS = [(220, 20, 60), (0, 130, 230), (250, 170, 30), (120, 60, 200)]
_BACKGROUND_COLOR = (128, 128, 128)


class _ShapesMetadata(Metadata):
    """
    Metadata whose ``json_file`` / ``image_root`` are those of ``$HPVIT_DATA`` when read (the
    split is generated then if needed), so detectron2's COCOEvaluator finds them as for any
    dataset registered with ``register_coco_instances``.
    """

    @property
    def json_file(self) -> str:
        return ensure_shapes_split(self.name)

    @property
    def image_root(self) -> str:
        return os.path.join(os.path.dirname(ensure_shapes_split(self.name)), IMAGE_DIR)


class _ShapesSemSegMetadata(Metadata):
    """
    Metadata whose ``image_root`` / ``sem_seg_root`` are those of ``$HPVIT_DATA`` when read (the
    split and its label maps are generated then if needed), as ``load_sem_seg`` datasets have.
    """

    @property
    def image_root(self) -> str:
        return ensure_shapes_sem_seg_split(self.name)[0]

    @property
    def sem_seg_root(self) -> str:
        return ensure_shapes_sem_seg_split(self.name)[1]


def _load_shapes_split(name: str) -> List[dict]:
    """detectron2 dataset dicts of split ``name``, generated first if needed."""
    json_file = ensure_shapes_split(name)
    return load_coco_json(json_file, os.path.join(os.path.dirname(json_file), IMAGE_DIR), name)


def register_all_shapes() -> None:
    """
    Register every split of ``SHAPES_SPLITS`` with its metadata (thing_classes, the COCO id map,
    thing_colors, ``evaluator_type="coco"``) and every split of ``SHAPES_SEM_SEG_SPLITS``
    (stuff_classes, stuff_colors, ignore_label, ``evaluator_type="sem_seg"``). Idempotent: a
    name already in DatasetCatalog (by an earlier call, or registered by the user) is left as it
    is.
    """
    for name in SHAPES_SPLITS:
        if name in DatasetCatalog.list():
            continue
        DatasetCatalog.register(name, lambda name=name: _load_shapes_split(name))
        metadata = _ShapesMetadata(name=name)
        metadata.set(
            thing_classes=list(SHAPE_CLASSES),
            thing_dataset_id_to_contiguous_id={k + 1: k for k in range(len(SHAPE_CLASSES))},
            thing_colors=list(_SHAPE_COLORS),
            evaluator_type="coco",
        )
        MetadataCatalog[name] = metadata
    for name in SHAPES_SEM_SEG_SPLITS:
        if name in DatasetCatalog.list():
            continue
        DatasetCatalog.register(name, lambda name=name: load_shapes_sem_seg(name))
        metadata = _ShapesSemSegMetadata(name=name)
        metadata.set(
            stuff_classes=list(SEM_SEG_CLASSES),
            stuff_colors=[_BACKGROUND_COLOR] + list(_SHAPE_COLORS),
            ignore_label=SEM_SEG_IGNORE_VALUE,
            evaluator_type="sem_seg",
        )
        MetadataCatalog[name] = metadata
