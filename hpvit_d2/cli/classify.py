"""
Fine-tune and evaluate an image classifier on an ImageFolder tree with timm's pipeline:
``projects/HPViT/classify.py``, ``hpvit-classify``.

    python projects/HPViT/classify.py --data-dir /data/imagenet --model hpvit_base_patch16_224 \\
        --pretrained mae_pretrain_vit_base.pth --batch-size 128 --accum-steps 8
    python projects/HPViT/classify.py --shapes --model hpvit_tiny_patch16_224 --img-size 64 \\
        --model-kwargs embed_dim=128 depth=4 num_heads=4 "stage_depths=(1,1,1,1)" --epochs 5
    python projects/HPViT/classify.py --data-dir /data/imagenet --eval-only --weights best.pth

Data: ``--data-dir`` holds ``train/<class>/*`` and ``val/<class>/*`` (or ``validation/``), the
same class folders in both; ``--shapes`` uses the embedded shapes ImageFolder
(hpvit_d2.data.shapes_classification, generated into $HPVIT_DATA). Models: any timm name;
``hpvit_{tiny,small,base,large}_patch16_224`` are HPViT's (``--model-kwargs`` passes its
arguments, e.g. ``patch_stride=16 "stage_depths=(12,)"`` for the plain ViT).

Everything is timm's: ``create_dataset`` / ``create_loader`` (``resolve_data_config``: RandAugment,
random erasing, resized crops, flips ``--hflip`` / ``--vflip``; eval resize + centre crop),
``Mixup`` (mixup/cutmix with label smoothing), ``create_optimizer_v2`` with ``layer_decay``
(HPViT's ``group_matcher`` puts the pooling layers with the stage they feed, and
``no_weight_decay`` exempts them and the position embedding), ``create_scheduler_v2`` (cosine,
per-update warm-up). The defaults ARE the MAE
ViT-B fine-tuning recipe (He et al. 2022, appendix A.1 / MAE's FINETUNE.md): 100 epochs,
effective batch 1024 (``--batch-size x --accum-steps``; lr = blr x batch / 256 = 2e-3 with
blr 5e-4), AdamW (0.9, 0.999), weight decay 0.05, layer decay 0.65, drop path 0.1, 5 warm-up
epochs, cosine to 1e-6, RandAugment rand-m9-mstd0.5-inc1, random erasing 0.25, mixup 0.8,
cutmix 1.0, label smoothing 0.1, bicubic, eval crop 224/256 = 0.875, global average pooling +
fc_norm. ViT-L (MAE): ``--epochs 50 --blr 1e-3 --layer-decay 0.75 --drop-path 0.2``.

Weights: ``--pretrained`` is read by hpvit_d2.checkpoint.HPViTCheckpointer (no code executed; MAE,
DeiT, timm, Hugging Face, ViTDet and HPViT-detector checkpoints converted; a load report printed;
``--strict``: every pre-trained backbone weight required). Checkpoints go to ``--output``
(``last.pth`` every epoch, ``best.pth`` at the best top-1) with ``save_atomic``; ``--resume``
continues from ``last.pth`` (model, optimizer, scheduler, epoch). ``log.jsonl`` has one line per
epoch (train loss, lr, top-1, top-5, eval loss, seconds), ``summary.json`` the last and best.
One process (no DDP); ``--device cuda`` runs on a GPU (with ``--amp``).

Exit codes: 0 done, 2 bad input (data directory, checkpoint, model name, arguments), 130
interrupted. Top-5 is top-min(5, classes).
"""
import argparse
import ast
import json
import math
import os
import sys
import time
from typing import Dict, Sequence, Tuple

from .common import EXIT_OK, add_debug_flag, log_to_stderr, program_name, run

__all__ = ["argument_parser", "create_classifier", "evaluate", "main", "pillow_safe_rand_augment",
           "resolve_data_dirs", "resolve_test_dir"]


def argument_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=program_name("hpvit-classify"), description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    data = p.add_argument_group("data")
    where = data.add_mutually_exclusive_group(required=True)
    where.add_argument("--data-dir", metavar="DIR", help="ImageFolder root with train/ and val/")
    where.add_argument("--shapes", action="store_true",
                       help="the embedded shapes ImageFolder (4 classes, 64x64, 100 + 25 / class)")
    data.add_argument("--workers", type=int, default=4)
    data.add_argument("--img-size", type=int, default=None,
                      help="input side (default: the model's, 224); also the img_size of a "
                           "model that takes one (a ViT)")
    data.add_argument("--crop-pct", type=float, default=None, help="eval crop (default 0.875)")
    data.add_argument("--interpolation", default="bicubic")
    data.add_argument("--scale", type=float, nargs=2, default=(0.08, 1.0), metavar=("MIN", "MAX"),
                      help="random-resized-crop area range (ImageNet: 0.08 1.0)")
    data.add_argument("--ratio", type=float, nargs=2, default=(3 / 4, 4 / 3), metavar=("MIN", "MAX"),
                      help="random-resized-crop aspect-ratio range")
    data.add_argument("--hflip", type=float, default=0.5, help="horizontal flip probability")
    data.add_argument("--vflip", type=float, default=0.0,
                      help="vertical flip probability (0 for natural images; a label-preserving "
                           "flip for the shapes)")
    data.add_argument("--aa", default="rand-m9-mstd0.5-inc1",
                      help="RandAugment ('' = none); with Pillow >= 13 an 'inc1' policy is capped "
                           "at magnitude 9 (-mmax9: Pillow refuses the 0-bit posterize of 10)")
    data.add_argument("--reprob", type=float, default=0.25, help="random erasing probability")
    data.add_argument("--remode", default="pixel")
    data.add_argument("--color-jitter", type=float, default=None)
    data.add_argument("--mixup", type=float, default=0.8, help="mixup alpha (0 = off)")
    data.add_argument("--cutmix", type=float, default=1.0, help="cutmix alpha (0 = off)")
    data.add_argument("--mixup-prob", type=float, default=1.0)
    data.add_argument("--mixup-switch-prob", type=float, default=0.5)
    data.add_argument("--smoothing", type=float, default=0.1, help="label smoothing")

    model = p.add_argument_group("model")
    model.add_argument("--model", default="hpvit_base_patch16_224", help="a timm model name")
    model.add_argument("--model-kwargs", nargs="*", default=[], metavar="KEY=VALUE",
                       help="extra model arguments, Python literals (stage_depths=(1,1,1,1))")
    model.add_argument("--num-classes", type=int, default=None,
                       help="default: the number of class folders")
    model.add_argument("--drop-path", type=float, default=0.1)
    model.add_argument("--pretrained", metavar="PATH", default=None,
                       help="plain ViT / MAE / DeiT / timm / Hugging Face checkpoint to start from")
    model.add_argument("--strict", action="store_true",
                       help="--pretrained must provide every pre-trained backbone weight")
    model.add_argument("--weights", metavar="PATH", default=None,
                       help="a checkpoint of this classifier (--eval-only: what to evaluate)")

    opt = p.add_argument_group("optimisation")
    opt.add_argument("--epochs", type=int, default=100)
    opt.add_argument("--batch-size", type=int, default=64, help="per step")
    opt.add_argument("--accum-steps", type=int, default=16,
                     help="steps per update (effective batch = batch size x this)")
    opt.add_argument("--lr", type=float, default=None, help="absolute lr (default blr x batch / 256)")
    opt.add_argument("--blr", type=float, default=5e-4, help="lr for an effective batch of 256")
    opt.add_argument("--min-lr", type=float, default=1e-6)
    opt.add_argument("--warmup-lr", type=float, default=1e-6)
    opt.add_argument("--warmup-epochs", type=int, default=5)
    opt.add_argument("--weight-decay", type=float, default=0.05)
    opt.add_argument("--layer-decay", type=float, default=0.65, help="0 or 1: none")
    opt.add_argument("--opt", default="adamw")
    opt.add_argument("--clip-grad", type=float, default=None)

    runtime = p.add_argument_group("run")
    runtime.add_argument("--output", default="output/classify", metavar="DIR")
    runtime.add_argument("--resume", action="store_true", help="continue from {output}/last.pth")
    runtime.add_argument("--eval-only", action="store_true")
    runtime.add_argument("--test", action="store_true",
                         help="after training, evaluate the last epoch's weights once on the "
                              "held-out DIR/test/ (summary.json 'test'); nothing is chosen on it")
    runtime.add_argument("--device", default="cpu")
    runtime.add_argument("--amp", action="store_true", help="bfloat16 autocast on CUDA")
    runtime.add_argument("--seed", type=int, default=0)
    add_debug_flag(p)
    return p


def _parse_kwargs(items: Sequence[str]) -> Dict:
    from ..overrides import ConfigError

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--model-kwargs {item!r}: expected KEY=VALUE")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def resolve_data_dirs(args) -> Tuple[str, str]:
    """(train dir, val dir) with the same class folders, or DatasetNotFoundError saying why."""
    from ..data.datasets import DatasetNotFoundError

    if args.shapes:
        from ..data.shapes_classification import ensure_shapes_classification

        root = ensure_shapes_classification()
    else:
        root = os.path.abspath(args.data_dir)
    layout = ("expected an ImageFolder tree: DIR/train/<class>/*.jpg|png and "
              "DIR/val/<class>/*.jpg|png (or DIR/validation/), the same class folders in both")
    dirs = []
    for names in (("train",), ("val", "validation")):
        found = [os.path.join(root, n) for n in names if os.path.isdir(os.path.join(root, n))]
        if not found:
            raise DatasetNotFoundError(f"classification data {root}: no {' or '.join(names)}/ "
                                       f"directory; {layout}")
        dirs.append(found[0])
    classes = [sorted(e.name for e in os.scandir(d) if e.is_dir()) for d in dirs]
    if not classes[0]:
        raise DatasetNotFoundError(f"classification data {dirs[0]}: no class folders; {layout}")
    if classes[0] != classes[1]:
        only = sorted(set(classes[0]) ^ set(classes[1]))
        raise DatasetNotFoundError(f"classification data {root}: train/ and {os.path.basename(dirs[1])}/ "
                                   f"have different class folders (e.g. {only[:5]}); {layout}")
    return dirs[0], dirs[1]


def create_classifier(args, num_classes: int):
    """timm.create_model(args.model, ...), with a ConfigError for an unknown name or argument.
    HPViT's ``hpvit_*`` names are registered here (``hpvit_d2.timm_models``)."""
    import timm

    from .. import timm_models  # noqa: F401  (registers the hpvit_* models)
    from ..overrides import ConfigError

    if not timm.is_model(args.model):
        raise ConfigError(f"--model {args.model!r} is not a timm model; HPViT's: "
                          f"{', '.join(timm.list_models('hpvit_*'))} (timm.list_models() for all)")
    kwargs = _parse_kwargs(args.model_kwargs)
    kwargs.setdefault("drop_path_rate", args.drop_path)
    attempts = [kwargs]
    if args.img_size is not None and "img_size" not in kwargs:
        # ViTs take the input side; a model without a fixed one (a CNN) refuses it, and then
        # --img-size sizes the data pipeline only.
        attempts.insert(0, dict(kwargs, img_size=args.img_size))
    for k, attempt in enumerate(attempts):
        try:
            return timm.create_model(args.model, num_classes=num_classes, **attempt)
        except (TypeError, ValueError) as e:
            if k + 1 == len(attempts) or "img_size" not in str(e):
                raise ConfigError(f"--model {args.model} with {attempt}: {e}") from None


def pillow_safe_rand_augment(policy: str) -> str:
    """
    ``policy`` (a timm RandAugment string), capped at magnitude 9 when it could reach 10 with the
    increasing posterize (``inc1``) and this Pillow refuses ``posterize(img, 0)`` (Pillow >= 13):
    timm maps magnitude 10 to 0 bits kept, which then raises in a loader worker at random. Below
    10 the policy is unchanged; other policies are returned as they are.
    """
    parts = policy.split("-")
    if parts[0] != "rand" or "inc1" not in parts[1:] or any(p.startswith("mmax") for p in parts):
        return policy
    from PIL import Image, ImageOps

    try:
        ImageOps.posterize(Image.new("RGB", (1, 1)), 0)
        return policy
    except ValueError:
        return policy + "-mmax9"


def _data_config(args, model) -> Dict:
    from timm.data import resolve_data_config

    return resolve_data_config(
        {"input_size": (3, args.img_size, args.img_size) if args.img_size else None,
         "crop_pct": args.crop_pct, "interpolation": args.interpolation}, model=model)


def _loader_kwargs(args, config: Dict) -> Dict:
    import torch

    return dict(input_size=config["input_size"], interpolation=config["interpolation"],
                mean=config["mean"], std=config["std"], num_workers=args.workers,
                use_prefetcher=False, device=torch.device(args.device), persistent_workers=False)


def eval_loader(args, config: Dict, directory: str):
    """timm's evaluation loader (resize + centre crop) of an ImageFolder ``directory``."""
    from timm.data import create_dataset, create_loader

    return create_loader(create_dataset("", root=directory, is_training=False),
                         batch_size=args.batch_size, is_training=False,
                         crop_pct=config["crop_pct"], **_loader_kwargs(args, config))


def _loaders(args, model, train_dir: str, val_dir: str):
    from timm.data import create_dataset, create_loader

    config = _data_config(args, model)
    train_set = create_dataset("", root=train_dir, is_training=True)
    train_loader = create_loader(
        train_set, batch_size=args.batch_size, is_training=True, scale=tuple(args.scale),
        ratio=tuple(args.ratio), hflip=args.hflip, vflip=args.vflip, re_prob=args.reprob,
        re_mode=args.remode, color_jitter=args.color_jitter,
        auto_augment=pillow_safe_rand_augment(args.aa) if args.aa else None,
        **_loader_kwargs(args, config)) if not args.eval_only else None
    return train_set, train_loader, eval_loader(args, config, val_dir), config


def resolve_test_dir(train_dir: str) -> str:
    """DIR/test/ beside ``train_dir``, with the train split's class folders, or
    DatasetNotFoundError saying why."""
    from ..data.datasets import DatasetNotFoundError

    test_dir = os.path.join(os.path.dirname(train_dir), "test")
    if not os.path.isdir(test_dir):
        raise DatasetNotFoundError(f"--test: no {test_dir}/; the tree needs a held-out "
                                   "test/<class>/ split beside train/ and val/")
    classes = sorted(e.name for e in os.scandir(test_dir) if e.is_dir())
    expected = sorted(e.name for e in os.scandir(train_dir) if e.is_dir())
    if classes != expected:
        raise DatasetNotFoundError(f"--test: {test_dir}/ has class folders {classes[:5]}, "
                                   f"train/ has {expected[:5]}: they must be the same")
    return test_dir


def evaluate(model, loader, device, amp: bool = False) -> Dict[str, float]:
    """Top-1, top-5 (top-min(5, classes)) in percent and the mean cross-entropy."""
    import torch
    import torch.nn.functional as F
    from timm.utils import accuracy
    from tqdm import tqdm

    model.eval()
    totals = {"top1": 0.0, "top5": 0.0, "loss": 0.0}
    count = 0
    with torch.inference_mode():
        for images, targets in tqdm(loader, desc="eval", unit="batch", file=sys.stderr, leave=False):
            images, targets = images.to(device), targets.to(device)
            with _autocast(device, amp):
                logits = model(images)
            top1, top5 = accuracy(logits.float(), targets, topk=(1, 5))
            n = targets.shape[0]
            totals["top1"] += top1.item() * n
            totals["top5"] += top5.item() * n
            totals["loss"] += F.cross_entropy(logits.float(), targets).item() * n
            count += n
    return {k: v / max(count, 1) for k, v in totals.items()}


def _autocast(device, amp: bool):
    import contextlib

    import torch

    if amp and torch.device(device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _criterion(args, mixup_active: bool):
    import torch
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    if mixup_active:
        return SoftTargetCrossEntropy()
    if args.smoothing > 0:
        return LabelSmoothingCrossEntropy(smoothing=args.smoothing)
    return torch.nn.CrossEntropyLoss()


def _check_args(args) -> None:
    from ..overrides import ConfigError

    if args.accum_steps < 1 or args.batch_size < 1 or args.epochs < 1:
        raise ConfigError("--batch-size, --accum-steps and --epochs must be >= 1")
    if (args.mixup > 0 or args.cutmix > 0) and args.batch_size % 2:
        raise ConfigError(f"--batch-size {args.batch_size}: mixup/cutmix pair images, use an even "
                          "batch size (or --mixup 0 --cutmix 0)")
    for flag in ("hflip", "vflip"):
        if not 0.0 <= getattr(args, flag) <= 1.0:
            raise ConfigError(f"--{flag} {getattr(args, flag)}: a probability, give a value in "
                              "[0, 1]")


def main(argv: Sequence[str]) -> int:
    args = argument_parser().parse_args(argv)
    log_to_stderr()
    _check_args(args)
    import torch
    from timm.data import Mixup
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2
    from tqdm import tqdm

    from ..checkpoint import HPViTCheckpointer, save_atomic
    from ..model_zoo import check_device

    device = check_device(args.device)
    torch.manual_seed(args.seed)
    train_dir, val_dir = resolve_data_dirs(args)
    classes = sorted(e.name for e in os.scandir(train_dir) if e.is_dir())
    num_classes = args.num_classes or len(classes)
    model = create_classifier(args, num_classes)
    if args.pretrained:
        checkpointer = HPViTCheckpointer(model, require="backbone" if args.strict else "architecture")
        checkpointer.load(args.pretrained)  # logs the load report (stderr)
    model.to(device)
    train_set, train_loader, val_loader, data_config = _loaders(args, model, train_dir, val_dir)
    test_dir = resolve_test_dir(train_dir) if args.test else None
    os.makedirs(args.output, exist_ok=True)

    if args.eval_only:
        if args.weights:
            HPViTCheckpointer(model, require="everything").load(args.weights)
        metrics = evaluate(model, val_loader, device, args.amp)
        print(json.dumps(metrics))
        return EXIT_OK

    effective_batch = args.batch_size * args.accum_steps
    lr = args.lr if args.lr is not None else args.blr * effective_batch / 256
    layer_decay = args.layer_decay if args.layer_decay not in (0, 1) else None
    optimizer = create_optimizer_v2(model, args.opt, lr=lr, weight_decay=args.weight_decay,
                                    layer_decay=layer_decay)
    updates_per_epoch = max(1, len(train_loader) // args.accum_steps)
    scheduler, _ = create_scheduler_v2(
        optimizer, sched="cosine", num_epochs=args.epochs, warmup_epochs=args.warmup_epochs,
        warmup_lr=args.warmup_lr, min_lr=args.min_lr, step_on_epochs=False,
        updates_per_epoch=updates_per_epoch)
    mixup = Mixup(mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, prob=args.mixup_prob,
                  switch_prob=args.mixup_switch_prob, label_smoothing=args.smoothing,
                  num_classes=num_classes) if args.mixup > 0 or args.cutmix > 0 else None
    criterion = _criterion(args, mixup is not None)

    last, best_path = os.path.join(args.output, "last.pth"), os.path.join(args.output, "best.pth")
    start_epoch, best_top1 = 0, -1.0
    if args.weights:
        HPViTCheckpointer(model, require="everything").load(args.weights)
    if args.resume and os.path.isfile(last):
        extra = HPViTCheckpointer(model, require="everything", optimizer=optimizer,
                                  scheduler=scheduler).load(last)
        start_epoch, best_top1 = int(extra["epoch"]) + 1, float(extra.get("best_top1", -1.0))
        print(f"resumed from {last}: epoch {start_epoch} of {args.epochs}", file=sys.stderr)
    elif args.resume:
        print(f"--resume: no {last} yet, starting from epoch 0", file=sys.stderr)
    scheduler.step_update(start_epoch * updates_per_epoch)

    print(f"{args.model}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params, "
          f"{num_classes} classes, {len(train_set)} train images, input {data_config['input_size']}, "
          f"lr {lr:.3g} (effective batch {effective_batch}), layer decay {layer_decay}",
          file=sys.stderr)
    metrics: Dict[str, float] = {}
    for epoch in range(start_epoch, args.epochs):
        metrics = _train_epoch(model, train_loader, optimizer, scheduler, criterion, mixup, args,
                               device, epoch, updates_per_epoch, tqdm)
        metrics.update(evaluate(model, val_loader, device, args.amp))
        metrics["epoch"] = epoch
        best_top1 = max(best_top1, metrics["top1"])
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "epoch": epoch, "best_top1": best_top1,
                 "model_name": args.model, "classes": classes}
        save_atomic(state, last)
        if metrics["top1"] >= best_top1:
            save_atomic(state, best_path)
        with open(os.path.join(args.output, "log.jsonl"), "a") as f:
            f.write(json.dumps(metrics) + "\n")
        print(f"epoch {epoch}: train loss {metrics['train_loss']:.4f}, top-1 {metrics['top1']:.2f}, "
              f"top-5 {metrics['top5']:.2f}, eval loss {metrics['loss']:.4f} "
              f"({metrics['seconds']:.0f}s)", file=sys.stderr)
    summary = {"last": metrics, "best_top1": best_top1, "model": args.model,
               "epochs": args.epochs, "output": os.path.abspath(args.output)}
    if test_dir is not None:
        loader = eval_loader(args, data_config, test_dir)
        summary["test"] = {**evaluate(model, loader, device, args.amp),
                           "num_images": len(loader.dataset), "weights": last}
        print(f"test ({test_dir}): top-1 {summary['test']['top1']:.2f} on "
              f"{summary['test']['num_images']} images", file=sys.stderr)
    with open(os.path.join(args.output, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(json.dumps(summary))
    return EXIT_OK


def _train_epoch(model, loader, optimizer, scheduler, criterion, mixup, args, device, epoch: int,
                 updates_per_epoch: int, tqdm) -> Dict[str, float]:
    """One epoch of (accumulated) updates; the scheduler steps per update."""
    import torch

    model.train()
    start, losses = time.time(), []
    optimizer.zero_grad()
    bar = tqdm(loader, desc=f"epoch {epoch}", unit="batch", file=sys.stderr)
    steps = updates_per_epoch * args.accum_steps
    for step, (images, targets) in enumerate(bar):
        if step >= steps:
            break
        images, targets = images.to(device), targets.to(device)
        if mixup is not None:
            images, targets = mixup(images, targets)
        with _autocast(device, args.amp):
            loss = criterion(model(images), targets)
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"epoch {epoch}, step {step}: loss is {loss.item()}; lower "
                                     "--blr/--lr or check the data")
        (loss / args.accum_steps).backward()
        losses.append(loss.item())
        if (step + 1) % args.accum_steps == 0:
            if args.clip_grad:
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad)
            optimizer.step()
            optimizer.zero_grad()
            scheduler.step_update(epoch * updates_per_epoch + (step + 1) // args.accum_steps)
        bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{optimizer.param_groups[-1]['lr']:.2e}")
    scheduler.step(epoch + 1)
    return {"train_loss": sum(losses) / max(len(losses), 1),
            "lr": max(g["lr"] for g in optimizer.param_groups), "seconds": time.time() - start}


def entry() -> None:
    """Console command ``hpvit-classify``."""
    sys.exit(run(main))


if __name__ == "__main__":
    entry()
