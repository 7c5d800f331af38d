"""
The paper's three task families in miniature, as rows of one table (``TASKS``): what each trains
(models and their configs), on which splits, which metric judges it, which arms run, which claims
are tested, and the fine-tuning schedule. The harness that runs any row is ``hpvit_lab.study``;
the recipes (lr, layer decay, drop path per arm) are tuned on val by ``hpvit_lab.tune`` and read
from ``recipes.json``.

An arm is ``MODEL/INIT``: a model of the task, initialised from the lab's shipped MAE (``mae``)
or at random (``scratch``).
"""
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

__all__ = ["Claim", "ModelSpec", "TASKS", "Task"]


@dataclass(frozen=True)
class ModelSpec:
    """One model of a task. ``config``: its detectron2 LazyConfig (detection, segmentation);
    ``trunk``: where its ViT sits in that config (for ``drop_path_rate``); ``timm_kwargs``: the
    arguments of ``hpvit_tiny_patch16_224`` (classification)."""

    label: str
    config: str = ""
    trunk: str = ""
    timm_kwargs: Tuple[str, ...] = ()


@dataclass(frozen=True)
class Claim:
    """``better`` beats ``worse`` (arm keys) on the task's metric, paired by seed. With ``minus``
    (two more arms), the claim is on the difference of differences: (better - worse) - (minus[0]
    - minus[1]). ``goal``: an effect size the project aims at, reported beside the test (the test
    is against 0). Holm's correction runs within a ``family``."""

    name: str
    text: str
    better: str
    worse: str
    goal: Optional[float] = None
    family: str = "primary"
    minus: Optional[Tuple[str, str]] = None

    def arms(self) -> Tuple[str, ...]:
        return (self.better, self.worse, *(self.minus or ()))


@dataclass(frozen=True)
class Task:
    """One row of the task table."""

    name: str
    title: str
    runner: str  # "detectron2" (hpvit_d2.cli.train) or "timm" (hpvit_d2.cli.classify)
    models: Dict[str, ModelSpec]
    splits: Dict[str, str]  # train / val / test dataset names (detectron2) or tree sizes (timm)
    smoke_splits: Dict[str, str]
    metric: str  # the record key every claim is judged on
    metric_label: str
    columns: Tuple[Tuple[str, str, str], ...]  # further metrics of the arms table
    arms: Tuple[str, ...]  # the default run
    full_arms: Tuple[str, ...]  # --full
    claims: Tuple[Claim, ...]
    iters: int = 0  # detectron2: iterations per run (the config's schedule, rescaled)
    schedule: Tuple[str, ...] = ()  # timm: the flags every run shares
    docs: str = ""  # the docs file its blocks go to (--readme default)
    output_dir: str = ""
    seconds_per_unit: Dict[str, float] = field(default_factory=dict)  # lane balancing only
    # hpvit_lab.tune's points, the same for every arm: MAE-style fine-tunes (low lr, strong layer
    # decay, drop path) through scratch-style ones (high lr, weak decay, no drop path)
    grid: Tuple[Dict[str, float], ...] = ()
    # the shipped MAE (hpvit_lab.shipped) its mae arms start from: the one pre-trained at the
    # task's input resolution
    checkpoint: str = "mae_tiny_shapes"


def _grid(*points: Tuple[float, float, float]) -> Tuple[Dict[str, float], ...]:
    """Tuning points from (lr, layer decay, drop path) triples."""
    return tuple(dict(lr=lr, layer_decay=ld, drop_path=dp) for lr, ld, dp in points)


_DETECTION = Task(
    name="detection",
    grid=_grid((4e-4, 0.75, 0.1), (8e-4, 0.75, 0.1), (1.6e-3, 0.75, 0.1),
               (4e-4, 0.9, 0.0), (8e-4, 0.9, 0.0), (1.6e-3, 0.9, 0.0)),
    title="Mask R-CNN on the shapes data",
    runner="detectron2",
    models={"hpvit": ModelSpec("HPViT-tiny", "mask_rcnn_hpvit_tiny.py", "model.backbone.bottom_up"),
            "vitdet": ModelSpec("ViTDet-tiny", "mask_rcnn_vitdet_tiny.py", "model.backbone.net")},
    splits={"train": "hpvit_shapes_train", "val": "hpvit_shapes_val", "test": "hpvit_shapes_test"},
    smoke_splits={"train": "hpvit_shapes_train_mini", "val": "hpvit_shapes_val_mini",
                  "test": "hpvit_shapes_val_mini"},
    metric="bbox/AP",
    metric_label="box AP",
    columns=(("mask AP", "segm/AP", "{:.1f}"), ("box AP50", "bbox/AP50", "{:.1f}"),
             ("box APs", "bbox/APs", "{:.1f}"), ("box APm", "bbox/APm", "{:.1f}"),
             ("box APl", "bbox/APl", "{:.1f}")),
    arms=("hpvit/mae", "hpvit/scratch", "vitdet/mae"),
    full_arms=("hpvit/mae", "hpvit/scratch", "vitdet/mae", "vitdet/scratch"),
    claims=(
        Claim("mae_helps_hpvit", "MAE helps HPViT-tiny (MAE - scratch)", "hpvit/mae",
              "hpvit/scratch", goal=3.0),
        Claim("hpvit_beats_vitdet", "HPViT-tiny from MAE beats ViTDet-tiny from the same MAE",
              "hpvit/mae", "vitdet/mae", goal=0.0),
        Claim("mae_helps_vitdet", "MAE helps ViTDet-tiny (MAE - scratch)", "vitdet/mae",
              "vitdet/scratch", family="secondary"),
        Claim("hpvit_reuses_better", "HPViT-tiny gains more from MAE than ViTDet-tiny "
              "(interaction)", "hpvit/mae", "hpvit/scratch", family="secondary",
              minus=("vitdet/mae", "vitdet/scratch")),
    ),
    iters=480,
    docs="docs/reproduction.md",
    output_dir="output/reproduce",
    seconds_per_unit={"hpvit": 0.75, "vitdet": 0.5},
)

_SEMSEG = Task(
    name="semseg",
    grid=_grid((2e-4, 0.75, 0.1), (5e-4, 0.75, 0.1), (1e-3, 0.75, 0.1),
               (5e-4, 0.9, 0.0), (1e-3, 0.9, 0.0), (2e-3, 0.9, 0.0)),
    title="UperNet semantic segmentation on the shapes label maps",
    runner="detectron2",
    models={"hpvit": ModelSpec("HPViT-tiny", "semseg_hpvit_tiny.py", "model.backbone"),
            "plain": ModelSpec("ViT-tiny + SFP", "semseg_vit_tiny.py", "model.backbone.net")},
    splits={"train": "hpvit_shapes_sem_seg_train", "val": "hpvit_shapes_sem_seg_val",
            "test": "hpvit_shapes_sem_seg_test"},
    smoke_splits={"train": "hpvit_shapes_sem_seg_train_mini", "val": "hpvit_shapes_sem_seg_val_mini",
                  "test": "hpvit_shapes_sem_seg_val_mini"},
    metric="mIoU",
    metric_label="mIoU (shapes)",
    columns=(("mIoU (5 classes)", "sem_seg/mIoU", "{:.1f}"), ("pixel acc.", "sem_seg/pACC", "{:.1f}"),
             ("collapsed", "collapsed", "{}")),
    arms=("hpvit/mae", "plain/mae", "hpvit/scratch"),
    full_arms=("hpvit/mae", "plain/mae", "hpvit/scratch", "plain/scratch"),
    claims=(
        Claim("hpvit_beats_plain", "HPViT-tiny from MAE beats ViT-tiny + simple feature pyramid "
              "from the same MAE", "hpvit/mae", "plain/mae", goal=0.0),
        Claim("mae_helps_hpvit", "MAE helps HPViT-tiny (MAE - scratch)", "hpvit/mae",
              "hpvit/scratch"),
        Claim("mae_helps_plain", "MAE helps ViT-tiny + SFP (MAE - scratch)", "plain/mae",
              "plain/scratch", family="secondary"),
    ),
    iters=800,
    docs="docs/tasks.md",
    output_dir="output/demo_semseg",
    seconds_per_unit={"hpvit": 0.4, "plain": 0.28},
)

_CLASSIFY = Task(
    name="classify",
    # from MAE-style (layer decay 0.75) to scratch-style (higher lr, no layer decay: 1.0)
    grid=_grid((5e-4, 0.75, 0.0), (1e-3, 0.9, 0.0), (2e-3, 1.0, 0.0)),
    title="image classification (timm) on the shapes ImageFolder",
    runner="timm",
    models={"hpvit": ModelSpec("HPViT-tiny", timm_kwargs=("stage_depths=(1,1,3,1)",
                                                          "pool_type=avg")),
            "plain": ModelSpec("ViT-tiny (plain)", timm_kwargs=("patch_stride=16",
                                                                "stage_depths=(6,)"))},
    splits={"train_per_class": "2500", "val_per_class": "100", "test_per_class": "500",
            "image_size": "64"},
    smoke_splits={"train_per_class": "8", "val_per_class": "4", "test_per_class": "4",
                  "image_size": "32"},
    metric="top1",
    metric_label="top-1",
    columns=(("val top-1", "val_top1", "{:.1f}"),),
    arms=("hpvit/mae", "plain/mae", "hpvit/scratch"),
    full_arms=("hpvit/mae", "plain/mae", "hpvit/scratch", "plain/scratch"),
    claims=(
        Claim("hpvit_beats_plain", "HPViT-tiny from MAE beats the plain ViT-tiny from the same "
              "MAE", "hpvit/mae", "plain/mae", goal=0.0),
        Claim("mae_helps_hpvit", "MAE helps HPViT-tiny (MAE - scratch)", "hpvit/mae",
              "hpvit/scratch"),
        Claim("mae_helps_plain", "MAE helps the plain ViT-tiny (MAE - scratch)", "plain/mae",
              "plain/scratch", family="secondary"),
    ),
    # Whole images in training and evaluation (--scale 1 1 --ratio 1 1 --crop-pct 1): a shape
    # fills up to 95% of the side, so resized crops cut corners off triangles and stars and turn
    # them into other classes (a pilot on val: 54% -> 65% top-1 at 20 epochs for plain/mae).
    # Flips both ways keep every class (--vflip 0.5 beside timm's --hflip 0.5). 10,000 training
    # images, not 2,000: on 2,000 the plain ViT overfits (issue 32's notes).
    # 4 epochs: three arms of five seeds in 40 minutes on two lanes of one thread (an HPViT-tiny
    # epoch is about 80 s a lane here, a plain one about a fifth of it).
    schedule=("--epochs", "4", "--batch-size", "32", "--accum-steps", "1", "--warmup-epochs",
              "1", "--aa", "", "--reprob", "0", "--scale", "1.0", "1.0", "--ratio", "1.0", "1.0",
              "--crop-pct", "1.0", "--vflip", "0.5", "--mixup", "0", "--cutmix", "0",
              "--workers", "1"),
    docs="docs/tasks.md",
    output_dir="output/demo_classify",
    seconds_per_unit={"hpvit": 80.0, "plain": 16.0},  # per epoch, two lanes busy
    checkpoint="mae_tiny_shapes64",
)

TASKS: Dict[str, Task] = {task.name: task for task in (_DETECTION, _SEMSEG, _CLASSIFY)}
