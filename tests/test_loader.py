"""ResumableTrainLoader: the batches are a function of (seed, position) only: the same for any
num_workers, and a loader restored from a state in the middle of the stream (partial
aspect-ratio groups included) continues exactly as the uninterrupted one."""
import json

import numpy as np
import pytest
import torch
from detectron2.data import DatasetMapper
from detectron2.data import transforms as T
from detectron2.data.datasets import load_coco_json
from PIL import Image

from hpvit_d2.data.loader import ResumableTrainLoader

BATCH = 3


@pytest.fixture(scope="module")
def mixed_orientation_dataset(tmp_path_factory):
    """12 images, landscape and portrait in an irregular order, one box each."""
    root = tmp_path_factory.mktemp("mixed")
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for i, landscape in enumerate([1, 1, 0, 1, 0, 0, 0, 1, 1, 0, 1, 1]):
        w, h = (48, 32) if landscape else (32, 48)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / f"{i}.png")
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": w, "height": h})
        annotations.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0,
                            "bbox": [2.0 + i, 3.0, 10.0, 12.0], "area": 120.0})
    with open(root / "instances.json", "w") as f:
        json.dump({"images": images, "annotations": annotations,
                   "categories": [{"id": 1, "name": "thing"}]}, f)
    return load_coco_json(str(root / "instances.json"), str(root), "loader_test_mixed")


def make_loader(dataset, num_workers):
    mapper = DatasetMapper(is_train=True, image_format="RGB",
                           augmentations=[T.RandomFlip(), T.ResizeScale(0.5, 1.5, 40, 40),
                                          T.FixedSizeCrop((40, 40), pad=False)])
    return ResumableTrainLoader(dataset, mapper=mapper, total_batch_size=BATCH, seed=11,
                                num_workers=num_workers)


def signature(batch):
    """What a batch is: images (exact bytes) and boxes after augmentation."""
    return [(d["file_name"], d["image"].numpy().tobytes(),
             d["instances"].gt_boxes.tensor.numpy().round(4).tobytes()) for d in batch]


def take(loader, n):
    iterator = iter(loader)
    return [signature(next(iterator)) for _ in range(n)], iterator


@pytest.fixture(scope="module")
def reference(mixed_orientation_dataset):
    batches, _ = take(make_loader(mixed_orientation_dataset, 0), 10)
    return batches


@pytest.mark.parametrize("num_workers", [1, 2])
def test_batches_do_not_depend_on_num_workers(mixed_orientation_dataset, reference, num_workers):
    batches, _ = take(make_loader(mixed_orientation_dataset, num_workers), 10)
    assert batches == reference


@pytest.mark.parametrize("stop_after, num_workers", [(3, 0), (4, 2), (7, 1)])
def test_restored_state_continues_exactly(mixed_orientation_dataset, reference, stop_after,
                                          num_workers):
    first = make_loader(mixed_orientation_dataset, 0)
    iterator = iter(first)
    for _ in range(stop_after):
        next(iterator)
    state = first.state_dict()
    # Augmentation really is random (flips differ across epochs) and partial groups are in flight.
    assert any(state["waiting"]), state
    resumed = make_loader(mixed_orientation_dataset, num_workers)
    resumed.load_state_dict(json.loads(json.dumps(state)))  # a checkpoint's round trip
    batches, _ = take(resumed, 10 - stop_after)
    assert batches == reference[stop_after:]


def test_global_random_state_is_untouched(mixed_orientation_dataset):
    torch.manual_seed(5)
    np.random.seed(5)
    expected = (torch.rand(3), np.random.rand(3))
    torch.manual_seed(5)
    np.random.seed(5)
    take(make_loader(mixed_orientation_dataset, 0), 3)
    torch.testing.assert_close(torch.rand(3), expected[0])
    np.testing.assert_array_equal(np.random.rand(3), expected[1])


def test_batches_mix_aspect_ratios_only_within_groups(reference, mixed_orientation_dataset):
    sizes = {d["file_name"]: d["width"] > d["height"] for d in mixed_orientation_dataset}
    for batch in reference:
        assert len({sizes[name] for name, _, _ in batch}) == 1
