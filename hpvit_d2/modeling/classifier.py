"""
HPViT as an image classifier, the way MAE fine-tunes a ViT on ImageNet: the hierarchical backbone,
global average pooling of the last stage, ``fc_norm`` (LayerNorm) and a linear ``head``.

Its parameters have timm's ViT names (``patch_embed.*``, ``pos_embed``, ``blocks.{i}.*``,
``pools.{k}.*``, ``fc_norm.*``, ``head.*``), so plain checkpoints convert through
:mod:`hpvit_d2.checkpoint.plain_vit`; ``head`` and ``fc_norm`` load when the checkpoint has them
with the same shapes (a timm ViT made with ``global_pool="avg"``, an MAE fine-tuned model).

With ``patch_stride=16, stage_depths=(12,)`` it is timm's ``VisionTransformer(class_token=False,
global_pool="avg")``, ``fc_norm`` included (timm then makes ``norm`` an identity): same weights,
same logits.

The timm model names (``hpvit_{tiny,small,base,large}_patch16_224``) are registered by
``import hpvit_d2.timm_models``, whose factory reads weights with the project's checkpointer, as
every entry does; ``hpvit_d2.checkpoint.checkpoint_filter_fn`` is timm's filter for users of
timm's own loaders.
"""
from typing import Callable, Optional

import torch
import torch.nn as nn
from timm.layers import trunc_normal_

from .hpvit import HPViT

__all__ = ["HPViTClassifier"]


def _check_global_pool(global_pool: str) -> None:
    if global_pool not in ("avg", ""):
        raise ValueError(f"global_pool={global_pool!r}: use 'avg' or '' (no pooling)")


class HPViTClassifier(HPViT):
    """
    HPViT + global average pooling + ``fc_norm`` + ``head``: (B, 3, H, W) -> (B, num_classes).

    Follows timm's classifier interface: ``forward_features`` (the last stage, channels last),
    ``forward_head``, ``get_classifier``, ``reset_classifier``, ``group_matcher`` (layer-wise lr
    decay in ``timm.optim.create_optimizer_v2(..., layer_decay=...)``), ``no_weight_decay``,
    ``set_grad_checkpointing``, ``num_classes``, ``num_features``.
    """

    def __init__(self, num_classes: int = 1000, global_pool: str = "avg", drop_rate: float = 0.0,
                 head_init_std: float = 2e-5, **hpvit_kwargs):
        """
        Args:
            num_classes: outputs of ``head``; 0 makes it an identity (features out).
            global_pool: "avg" (mean over the last stage's positions), or "" (no pooling, no
                head: ``forward`` returns the last stage's (B, H, W, C) map).
            drop_rate: dropout before the head.
            head_init_std: std of the head's truncated-normal initialisation (MAE: 2e-5).
            hpvit_kwargs: :class:`HPViT`'s arguments (``patch_stride``, ``stage_depths``,
                ``pool_type``, ``img_size``, ``embed_dim``, ``depth``, ``num_heads``,
                ``drop_path_rate``, ``norm_layer``, ...). ``out_features`` is the last stage.
        """
        _check_global_pool(global_pool)
        hpvit_kwargs.pop("out_features", None)
        super().__init__(**hpvit_kwargs)
        self._set_out_features(self.stage_names[-1:])
        embed_dim = self.patch_embed.proj.out_channels
        norm_layer = hpvit_kwargs.get("norm_layer", nn.LayerNorm)
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.num_features = self.head_hidden_size = embed_dim
        self.fc_norm = norm_layer(embed_dim) if global_pool else nn.Identity()
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self._init_head(head_init_std)

    def _init_head(self, std: float) -> None:
        if isinstance(self.head, nn.Linear):
            trunc_normal_(self.head.weight, std=std)
            nn.init.zeros_(self.head.bias)

    # ---------------------------------------------------------------- timm interface
    def group_matcher(self, coarse: bool = False) -> Callable[[str], int]:
        """timm's parameter grouping (a function of the name): per block, or per stage if coarse."""
        if not coarse:
            return self.layer_id
        ends = [sum(self.stage_depths[: k + 1]) for k in range(len(self.stage_depths))]

        def stage_id(name: str) -> int:
            layer = self.layer_id(name)
            if layer == 0 or layer > len(self.blocks):
                return 0 if layer == 0 else len(ends) + 1
            return 1 + next(k for k, end in enumerate(ends) if layer <= end)

        return stage_id

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.use_act_checkpoint = enable

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        if global_pool is not None:
            _check_global_pool(global_pool)
            self.global_pool = global_pool
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self._init_head(2e-5)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> the last stage, (B, H / s, W / s, C) channels last (s its stride)."""
        return HPViT.forward(self, x)[self.stage_names[-1]].permute(0, 2, 3, 1)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, h, w, C) -> (B, num_classes) logits (``pre_logits``: the normalised (B, C))."""
        if not self.global_pool:
            return x
        x = self.fc_norm(x.mean(dim=(1, 2)))
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, num_classes) logits."""
        return self.forward_head(self.forward_features(x))

