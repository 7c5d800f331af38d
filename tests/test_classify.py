"""The classification command (projects/HPViT/classify.py) on the embedded shapes ImageFolder:
fine-tunes from a plain ViT checkpoint and evaluates (top-1/top-5), resumes, evaluates a checkpoint,
and refuses bad data, checkpoints and models in one line with exit code 2."""
import json
import os

import pytest
import timm
import torch

from hpvit_d2.cli import classify
from hpvit_d2.cli.common import run
from hpvit_d2.data import shapes_classification
from hpvit_d2.data.shapes_classification import generate_shapes_classification

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--model", "hpvit_tiny_patch16_224", "--img-size", "32", "--model-kwargs", "embed_dim=32",
        "depth=4", "num_heads=2", "stage_depths=(1,1,1,1)"]
FAST = ["--batch-size", "8", "--accum-steps", "1", "--warmup-epochs", "1", "--workers", "0",
        "--blr", "2e-3"]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """The shapes ImageFolder, small: 8 train and 4 val images per class, 32x32."""
    return generate_shapes_classification(str(tmp_path_factory.mktemp("shapes")), 8, 4, 32, seed=0)


@pytest.fixture(scope="module")
def plain_vit(tmp_path_factory):
    """A plain timm ViT of the tiny model's width and depth, saved as timm saves it."""
    vit = timm.create_model("vit_tiny_patch16_224", embed_dim=32, depth=4, num_heads=2)
    path = tmp_path_factory.mktemp("vit") / "vit.pth"
    torch.save(vit.state_dict(), path)
    return str(path), vit.state_dict()


def test_shapes_tree_is_an_image_folder_and_deterministic(tree, tmp_path):
    for split, count in (("train", 8), ("val", 4)):
        assert sorted(os.listdir(os.path.join(tree, split))) == ["circle", "rectangle", "star",
                                                                 "triangle"]
        assert len(os.listdir(os.path.join(tree, split, "star"))) == count
    again = generate_shapes_classification(str(tmp_path), 8, 4, 32, seed=0)
    name = os.path.join("val", "triangle", "triangle_00003.png")
    with open(os.path.join(tree, name), "rb") as a, open(os.path.join(again, name), "rb") as b:
        assert a.read() == b.read()


def test_finetunes_from_a_plain_checkpoint_evaluates_and_resumes(tree, plain_vit, tmp_path, capsys,
                                                                 monkeypatch):
    path, source = plain_vit
    out = tmp_path / "out"
    # --shapes: the embedded tree (here the small one)
    monkeypatch.setattr(shapes_classification, "ensure_shapes_classification", lambda: tree)
    args = ["--shapes", *TINY, *FAST, "--pretrained", path, "--strict", "--output", str(out)]
    assert run(classify.main, args + ["--epochs", "1"]) == 0
    err = capsys.readouterr().err
    assert err.count("converted into the backbone") == 1 and "4 classes, 32 train images" in err
    state = torch.load(out / "last.pth", weights_only=True)
    assert state["epoch"] == 0 and state["classes"] == ["circle", "rectangle", "star", "triangle"]
    assert set(state) >= {"model", "optimizer", "scheduler", "best_top1"}
    # resume: epoch 1 continues from last.pth (model, optimizer, scheduler)
    assert run(classify.main, args + ["--epochs", "2", "--resume"]) == 0
    assert "resumed from" in capsys.readouterr().err
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [0, 1]
    for record in log:
        assert 0 <= record["top1"] <= 100 and record["top5"] == pytest.approx(100.0)  # top-4 of 4
        assert record["train_loss"] > 0 and record["loss"] > 0
    assert (out / "best.pth").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best_top1"] == max(r["top1"] for r in log)
    # evaluation of a checkpoint alone
    assert run(classify.main, ["--data-dir", tree, *TINY, "--workers", "0", "--eval-only",
                               "--weights", str(out / "best.pth"), "--output", str(out)]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["top1"] == pytest.approx(summary["best_top1"])


@pytest.mark.parametrize("case, message", [
    ("no_train", "no train/ directory; expected an ImageFolder tree"),
    ("other_classes", "different class folders"),
    ("bad_checkpoint", "bad.pth: not a checkpoint (a .pth/.pt file starts as a zip or a pickle"),
    ("unknown_model", "is not a timm model; HPViT's: hpvit_base_patch16_224"),
    ("odd_batch", "use an even batch size"),
    ("bad_flip", "--vflip 1.5: a probability, give a value in [0, 1]"),
])
def test_bad_inputs_are_one_line_and_exit_2(case, message, tree, tmp_path, capsys):
    data = tree
    args = [*TINY, *FAST, "--epochs", "1", "--output", str(tmp_path / "out")]
    if case == "no_train":
        data = str(tmp_path)
    elif case == "other_classes":
        data = str(tmp_path / "copy")
        for split in ("train", "val"):
            for cls in (("circle", "star") if split == "train" else ("circle", "square")):
                os.makedirs(os.path.join(data, split, cls))
    elif case == "bad_checkpoint":
        (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
        args += ["--pretrained", str(tmp_path / "bad.pth")]
    elif case == "unknown_model":
        args += ["--model", "hpvit_huge_patch99"]
    elif case == "odd_batch":
        args += ["--batch-size", "7"]
    elif case == "bad_flip":
        args += ["--vflip", "1.5"]
    assert run(classify.main, ["--data-dir", data, *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1], err


def test_rand_augment_never_posterizes_to_zero_bits():
    """timm's increasing posterize keeps 0 bits at magnitude 10, which Pillow >= 13 refuses (a
    random crash in a loader worker); the policy classify.py builds stays below it."""
    from PIL import Image, ImageOps
    from timm.data.auto_augment import AugmentOp

    policy = classify.pillow_safe_rand_augment("rand-m9-mstd0.5-inc1")
    assert classify.pillow_safe_rand_augment("rand-m9-mstd0.5") == "rand-m9-mstd0.5"
    image = Image.new("RGB", (8, 8), (200, 100, 50))
    try:
        ImageOps.posterize(image, 0)
        refuses = False
    except ValueError:
        refuses = True
    assert (policy == "rand-m9-mstd0.5-inc1-mmax9") == refuses
    if refuses:  # what the uncapped policy hits at the top of its range
        with pytest.raises(ValueError, match="bits must be"):
            AugmentOp("PosterizeIncreasing", prob=1.0, magnitude=10)(image)
    capped = {"magnitude_std": 0.5, "magnitude_max": 9 if refuses else None}
    op = AugmentOp("PosterizeIncreasing", prob=1.0, magnitude=9, hparams=capped)
    for _ in range(300):  # ~half the draws of N(9, 0.5) are clipped at the cap
        op(image)


def test_img_size_sizes_the_data_of_a_model_without_one(tree, tmp_path, capsys):
    """--img-size goes into a ViT and only into the data pipeline of a CNN (was: "ResNet.__init__()
    got an unexpected keyword argument 'img_size'"); other bad arguments still stop in one line."""
    out = tmp_path / "cnn"
    args = ["--data-dir", tree, "--model", "resnet10t", "--img-size", "32", *FAST, "--epochs", "1",
            "--aa", "", "--reprob", "0", "--mixup", "0", "--cutmix", "0", "--output", str(out)]
    assert run(classify.main, args) == 0
    assert "input (3, 32, 32)" in capsys.readouterr().err
    assert torch.load(out / "last.pth", weights_only=True)["epoch"] == 0
    assert run(classify.main, args + ["--model-kwargs", "no_such_argument=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: --model resnet10t with") and "no_such_argument" in err[-1]


def test_flip_flags_reach_the_training_transform(tree):
    """--hflip / --vflip are the probabilities of timm's training flips (the shapes keep their
    class under both); the eval transform never flips."""
    import torchvision.transforms as T

    args = classify.argument_parser().parse_args(
        ["--data-dir", tree, *TINY, *FAST, "--hflip", "0", "--vflip", "1", "--aa", "",
         "--reprob", "0"])
    model = classify.create_classifier(args, num_classes=4)
    _, train_loader, val_loader, _ = classify._loaders(args, model, os.path.join(tree, "train"),
                                                       os.path.join(tree, "val"))

    def flips(loader):
        return {type(t).__name__: t.p for t in loader.dataset.transform.transforms
                if isinstance(t, (T.RandomHorizontalFlip, T.RandomVerticalFlip))}

    assert flips(train_loader) == {"RandomVerticalFlip": 1.0}
    assert flips(val_loader) == {}
