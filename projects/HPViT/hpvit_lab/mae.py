"""
Masked-autoencoder pre-training of a small plain ViT with a third-party implementation: Hugging
Face ``transformers``' ``ViTMAEForPreTraining``, on a folder of unlabelled images.

The result is written with ``save_pretrained`` (``config.json`` + ``model.safetensors``): the
format users hold, which ``hpvit_d2.convert`` and every loading path of this project read. A
``mae_pretrain.json`` next to it keeps the settings and the loss curve; a directory whose settings
match is reused (:func:`pretrain_mae` returns at once).

Recipe (MAE, He et al. 2022, scaled down): random resized crops (scale 0.2-1) and flips, 75%
masking, normalised-pixel loss, AdamW (betas 0.9/0.95, wd 0.05 on weight matrices only: MAE's
parameter groups leave biases, norms, the class and mask tokens and position tables undecayed),
linear warm-up then cosine decay. Images are normalised with the ImageNet mean and std, as the
detectors' ``pixel_mean/std`` do.
"""
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

__all__ = ["MAESettings", "ensure_sincos_positions", "load_images", "mae_param_groups", "pretrain_mae",
           "read_history"]

HISTORY_FILE = "mae_pretrain.json"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class MAESettings:
    """The encoder's size (it must match the detector config it initialises) and the recipe.

    The decoder is MAE's lightweight one: per token, its blocks cost at most 30% of the
    encoder's (:meth:`decoder_cost_ratio`), as MAE's ViT-B recipe (8 x 512 against 12 x 768)."""

    width: int = 128
    depth: int = 6
    heads: int = 4
    patch_size: int = 16
    image_size: int = 224
    decoder_width: int = 64
    decoder_depth: int = 1
    decoder_heads: int = 4
    mask_ratio: float = 0.75
    norm_pix_loss: bool = True
    steps: int = 800
    batch_size: int = 32
    lr: float = 1.5e-3
    weight_decay: float = 0.05
    decay_only_matrices: bool = True  # MAE's groups; False decays every parameter
    warmup_fraction: float = 0.05
    min_crop_scale: float = 0.2
    max_crop_scale: float = 1.0
    seed: int = 0
    num_images: int = 0  # recorded: how many images it saw (set by pretrain_mae)

    def decoder_cost_ratio(self) -> float:
        """Multiply-adds per token of the decoder's blocks over the encoder's: each block's
        projections and MLP (ratio 4) cost 12 * width^2 per token, so the ratio is
        decoder_depth * decoder_width^2 / (depth * width^2). MAE's ViT-B: 0.296."""
        return self.decoder_depth * self.decoder_width ** 2 / (self.depth * self.width ** 2)


def load_images(files: Sequence[str]) -> np.ndarray:
    """(N, H, W, 3) uint8 of equally sized RGB image files."""
    from PIL import Image

    return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])


def _batch(images: torch.Tensor, settings: MAESettings, generator: torch.Generator) -> torch.Tensor:
    """(B, 3, S, S) normalised random resized crops with flips of random images (uint8 NHWC in).
    The crops are resampled together by ``torchvision.ops.roi_align`` (bilinear, averaging
    ``ceil(crop / S)`` samples per output pixel and axis, so a shrunk crop is not aliased)."""
    from torchvision.ops import roi_align

    n, height, width, _ = images.shape
    picks, boxes, flips = [], [], []
    for i in torch.randint(n, (settings.batch_size,), generator=generator).tolist():
        low, high = settings.min_crop_scale, settings.max_crop_scale
        scale = low + (high - low) * torch.rand(1, generator=generator).item()
        ratio = math.exp((torch.rand(1, generator=generator).item() - 0.5) * 2 * math.log(4 / 3))
        w = min(width, round(math.sqrt(scale * ratio) * width))
        h = min(height, round(math.sqrt(scale / ratio) * height))
        top = torch.randint(height - h + 1, (1,), generator=generator).item()
        left = torch.randint(width - w + 1, (1,), generator=generator).item()
        picks.append(i)
        boxes.append([len(boxes), left, top, left + w, top + h])
        flips.append(torch.rand(1, generator=generator).item() < 0.5)
    x = images[picks].permute(0, 3, 1, 2).float() / 255  # (B, 3, H, W)
    x = roi_align(x, torch.tensor(boxes, dtype=torch.float32), settings.image_size,
                  sampling_ratio=0, aligned=True)
    x[flips] = x[flips].flip(-1)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def _is_zero(tensor: torch.Tensor) -> bool:
    return not bool(tensor.detach().abs().sum() > 0)


def ensure_sincos_positions(model) -> None:
    """
    Give a freshly built ``ViTMAEForPreTraining`` its fixed 2-D sin-cos position embeddings
    (encoder and decoder), with transformers' own ``initialize_weights``.

    transformers 5 builds them as zeros: its ``post_init`` marks the patch projection initialised
    before the embeddings module is reached (so the sin-cos copy is skipped) and zeroes the
    decoder's. Both are frozen, so an MAE trained so never sees where a patch is: its loss stalls
    and its features hardly transfer. Raises RuntimeError if they are still zero.
    """
    embeddings, decoder = model.vit.embeddings, model.decoder
    with torch.no_grad():
        if _is_zero(embeddings.position_embeddings):
            projection = embeddings.patch_embeddings.projection
            if getattr(projection, "_is_hf_initialized", False):
                projection._is_hf_initialized = False  # else initialize_weights returns at once
            embeddings.initialize_weights()
        if _is_zero(decoder.decoder_pos_embed):
            decoder.initialize_weights(embeddings.patch_embeddings.num_patches)
    if _is_zero(embeddings.position_embeddings) or _is_zero(decoder.decoder_pos_embed):
        import transformers

        raise RuntimeError(f"transformers {transformers.__version__}: ViTMAEForPreTraining's "
                           "sin-cos position embeddings could not be initialised")


# MAE's no-decay set beyond biases and norms (timm's 1-D rule): the tokens and position tables.
_NO_WEIGHT_DECAY = ("*cls_token", "*mask_token", "*position_embeddings", "*decoder_pos_embed")


def mae_param_groups(model, weight_decay: float, decay_only_matrices: bool = True) -> list:
    """AdamW parameter groups as MAE's pre-training makes them (timm's
    ``param_groups_weight_decay``): weight decay on weight matrices and kernels only; with
    ``decay_only_matrices=False``, one group that decays every trainable parameter."""
    from timm.optim import param_groups_weight_decay

    if not decay_only_matrices:
        return [{"params": [p for p in model.parameters() if p.requires_grad],
                 "weight_decay": weight_decay}]
    return param_groups_weight_decay(model, weight_decay, no_weight_decay_list=_NO_WEIGHT_DECAY)


def _lr(settings: MAESettings, step: int) -> float:
    warmup = max(1, round(settings.warmup_fraction * settings.steps))
    if step < warmup:
        return settings.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, settings.steps - warmup)
    return settings.lr * 0.5 * (1 + math.cos(math.pi * progress))


def read_history(out_dir: str) -> Optional[Dict]:
    """The settings and loss curve stored with a pre-trained model, or None."""
    try:
        with open(os.path.join(out_dir, HISTORY_FILE)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def pretrain_mae(
    images: np.ndarray,
    out_dir: str,
    settings: MAESettings = MAESettings(),
    progress: Optional[Callable[[int, float, float], None]] = None,
) -> Dict:
    """
    Pre-train ``ViTMAEForPreTraining`` on ``images`` and ``save_pretrained`` it to ``out_dir``.

    Args:
        images: (N, H, W, 3) uint8 unlabelled images.
        out_dir: the save_pretrained directory (written atomically: a temporary directory renamed).
        settings: model size and recipe.
        progress: called as ``progress(step, loss, seconds)`` after every step.
    Returns:
        ``{"settings": ..., "losses": [per-step loss], "seconds": ..., "cached": bool}``; when
        ``out_dir`` already holds a model pre-trained with the same settings, it is returned as is.
    """
    from transformers import ViTMAEConfig, ViTMAEForPreTraining

    settings = MAESettings(**{**asdict(settings), "num_images": int(len(images))})
    previous = read_history(out_dir)
    if previous is not None and previous.get("settings") == asdict(settings) and \
            os.path.isfile(os.path.join(out_dir, "model.safetensors")):
        return {**previous, "cached": True}

    torch.manual_seed(settings.seed)
    config = ViTMAEConfig(
        hidden_size=settings.width, num_hidden_layers=settings.depth,
        num_attention_heads=settings.heads, intermediate_size=4 * settings.width,
        image_size=settings.image_size, patch_size=settings.patch_size,
        decoder_hidden_size=settings.decoder_width, decoder_num_hidden_layers=settings.decoder_depth,
        decoder_num_attention_heads=settings.decoder_heads,
        decoder_intermediate_size=4 * settings.decoder_width, mask_ratio=settings.mask_ratio,
        norm_pix_loss=settings.norm_pix_loss, layer_norm_eps=1e-6,
    )
    model = ViTMAEForPreTraining(config).train()
    ensure_sincos_positions(model)
    groups = mae_param_groups(model, settings.weight_decay, settings.decay_only_matrices)
    optimizer = torch.optim.AdamW(groups, lr=settings.lr,
                                  betas=(0.9, 0.95))
    data = torch.from_numpy(images)
    generator = torch.Generator().manual_seed(settings.seed)
    losses: List[float] = []
    start = time.time()
    for step in range(settings.steps):
        for group in optimizer.param_groups:
            group["lr"] = _lr(settings, step)
        loss = model(pixel_values=_batch(data, settings, generator)).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if progress is not None:
            progress(step, losses[-1], time.time() - start)

    history = {"settings": asdict(settings), "losses": losses, "seconds": time.time() - start}
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".mae-", dir=parent)
    try:
        model.save_pretrained(tmp)
        with open(os.path.join(tmp, HISTORY_FILE), "w") as f:
            json.dump(history, f)
        if os.path.isdir(out_dir):
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {**history, "cached": False}
