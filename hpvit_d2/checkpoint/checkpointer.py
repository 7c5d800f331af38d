"""
``HPViTCheckpointer``: the one way this project reads and writes weights.

It is detectron2's ``DetectionCheckpointer`` (same ``load``/``save``/``resume_or_load``,
checkpointables, ``?matching_heuristics=True``), with these additions:

- reading executes nothing: ``.pth`` through ``torch.load(weights_only=True)``, detectron2's
  ``.pkl`` with an unpickler that admits only arrays, numbers, strings and containers; it also
  reads ``.safetensors`` and Hugging Face ``save_pretrained`` directories;
- a plain ViT checkpoint (MAE, DeiT/timm, Hugging Face, ViTDet) is converted into the model's
  ViT backbone (:func:`~hpvit_d2.checkpoint.plain_vit.convert_plain_vit`), whatever the model's key prefix;
- ``require`` refuses, before the model is touched, what would leave wrong or random weights:
  ``"nothing"``, ``"architecture"`` (the checkpoint is for another model: a detector with another
  backbone, a ViT of another width, depth or patch size, not a ViT at all), ``"backbone"`` (also
  any pre-trained backbone weight missing) or ``"everything"`` (every model tensor must come from
  the checkpoint, as inference needs);
- ``self.report`` (:class:`~hpvit_d2.checkpoint.report.LoadReport`) says what was loaded, converted
  and left at initialisation, counted over the whole model; it is logged;
- weights holding a NaN or an Inf are refused, when read (whatever ``require`` says) and when
  written (``save`` writes nothing);
- writing is atomic (a temporary file renamed into place, ``last_checkpoint`` likewise) and gives
  files the permissions of the umask, as detectron2's own writes do; a failed write (full disk)
  is a CheckpointError naming the cause.
"""
import logging
import os
from typing import Dict, List, Optional
from unittest import mock

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.checkpoint import detection_checkpoint as d2_detection_checkpoint
from detectron2.checkpoint.c2_model_loading import align_and_update_state_dicts

from .io import (
    AtomicPathManager,
    CheckpointError,
    NonFiniteWeightsError,
    fetch_weights,
    non_finite_tensors,
    os_error_behind,
    read_weights,
    safe_pickle_load,
)
from .plain_vit import (
    IncompatibleCheckpointError,
    convert_plain_vit,
    extract_state_dict,
    timm_named,
    vit_geometry,
    vit_key_prefix,
)
from .report import LoadReport, model_part
from .resume import non_finite_optimizer_state, optimizer_state_problem

__all__ = ["HPViTCheckpointer", "REQUIRE_LEVELS", "unwrap_parallel"]

logger = logging.getLogger(__name__)

REQUIRE_LEVELS = ("nothing", "architecture", "backbone", "everything")
# Keys a plain ViT checkpoint may carry besides its backbone (timm names, after Hugging Face renames).
_PLAIN_EXTRAS = ("cls_token", "dist_token", "mask_token", "reg_token", "norm.", "fc_norm.", "head.",
                 "head_dist.", "decoder", "pooler.", "classifier.")
# Model keys detectron2 does not expect from a checkpoint (buffers set from the config).
_NOT_FROM_CHECKPOINTS = ("pixel_mean", "pixel_std")
_RESUME_ADVICE = ("--resume continues a run with the model it saved: give the run's config, or "
                  "start another run in a new train.output_dir")
_BACKBONE_NAMES = {"backbone.bottom_up.": "HPViT (FPN over HPViT)",
                   "backbone.net.": "ViTDet (SimpleFeaturePyramid over ViT)"}


class _SafePickle:
    """Stands in for the ``pickle`` module inside detectron2's ``.pkl`` reader."""

    @staticmethod
    def load(f, encoding="latin1"):
        return safe_pickle_load(f, encoding=encoding)


def unwrap_parallel(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a (Distributed)DataParallel wrapper, or ``model`` itself."""
    return model.module if isinstance(getattr(model, "module", None), torch.nn.Module) else model


def _backbone_name(prefix: Optional[str]) -> str:
    return _BACKBONE_NAMES.get(prefix or "", f"a ViT under {prefix!r}" if prefix else "no ViT")


class HPViTCheckpointer(DetectionCheckpointer):
    """See the module docstring. ``self.report`` holds the last load's :class:`LoadReport`."""

    def __init__(self, model, save_dir: str = "", *, require: str = "architecture",
                 save_to_disk: Optional[bool] = None, **checkpointables):
        """
        Args:
            model (nn.Module): the model (DDP-wrapped or not).
            save_dir (str): where ``save`` writes and ``resume_or_load`` looks.
            require (str): one of ``REQUIRE_LEVELS`` (see the module docstring).
            save_to_disk, checkpointables: as ``DetectionCheckpointer``.
        """
        if require not in REQUIRE_LEVELS:
            raise ValueError(f"require={require!r}: use one of {REQUIRE_LEVELS}")
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.require = require
        self.path_manager = AtomicPathManager()
        self.report: Optional[LoadReport] = None
        self._source: Optional[str] = None
        self._pending: Optional[LoadReport] = None
        self._resuming = False

    @property
    def _required(self) -> str:
        """``require``, or "everything" while resuming: a run continues with the model it saved."""
        return "everything" if self._resuming else self.require

    def _how_to_force(self) -> str:
        return f"; {_RESUME_ADVICE}" if self._resuming else \
            " (--allow-partial / strict=False loads it anyway)"

    def _optimizers(self):
        """(checkpointable key, optimizer, its saved state in a checkpoint dict -> dict or None)."""
        for key, obj in self.checkpointables.items():
            if isinstance(obj, torch.optim.Optimizer):
                yield key, obj, lambda checkpoint, key=key: checkpoint.get(key)
            elif isinstance(getattr(obj, "optimizer", None), torch.optim.Optimizer):
                yield key, obj.optimizer, lambda checkpoint, key=key: (
                    checkpoint.get(key) or {}).get("optimizer")

    def resume_or_load(self, path: str, *, resume: bool = True):
        """detectron2's, except that the checkpoint to resume must fit the model exactly and the
        optimizer's state its optimizer (structure and finite values), checked before anything
        is loaded; ``require`` applies to ``path`` only."""
        self._resuming = resume and self.has_checkpoint()
        try:
            return super().resume_or_load(path, resume=resume)
        finally:
            self._resuming = False

    # ------------------------------------------------------------------ reading
    def load(self, path: str, checkpointables: Optional[List[str]] = None):
        self.report = None
        if not path:
            return super().load(path, checkpointables)
        _, sep, query = path.partition("?")
        self._source, local = fetch_weights(path)  # resolved and fetched once, here
        return super().load(local + sep + query, checkpointables)

    def _torch_load(self, f: str):
        return read_weights(f, self._source)

    def _load_file(self, filename: str):
        if filename.endswith(".safetensors"):
            loaded = {"model": read_weights(filename, self._source)}
        elif filename.endswith(".pkl"):
            try:
                with mock.patch.object(d2_detection_checkpoint, "pickle", _SafePickle):
                    loaded = super()._load_file(filename)
            except CheckpointError as e:
                raise CheckpointError(f"{filename}: {e}") from None
            except Exception as e:  # EOFError, UnpicklingError...: a truncated or corrupt file
                message = str(e).splitlines()[0] if str(e) else ""
                raise CheckpointError(f"{filename}: unreadable checkpoint, truncated or corrupt "
                                      f"({type(e).__name__}: {message})") from None
        else:
            loaded = super()._load_file(filename)
        return self._prepare(loaded)

    def _prepare(self, loaded: Dict) -> Dict:
        """Classify the checkpoint, convert a plain ViT, apply ``require``'s architecture check."""
        source = self._source or "checkpoint"
        model = unwrap_parallel(self.model)
        target = model.state_dict()
        heuristics = loaded.pop("matching_heuristics", False)
        raw = extract_state_dict(loaded["model"])
        _refuse_non_finite(source, raw, _floating_dtype(model))
        state, _ = timm_named(raw)
        model_prefix, ckpt_prefix = vit_key_prefix(target), vit_key_prefix(state)
        plain = _is_plain_vit(state, ckpt_prefix)
        if model_prefix is not None and ckpt_prefix is not None and (
                plain or ckpt_prefix != model_prefix):
            if not plain and self._required == "everything":
                raise CheckpointError(_architecture_message(source, ckpt_prefix, model_prefix))
            return self._convert(loaded, raw, model, model_prefix, len(target))
        if heuristics:
            state = align_and_update_state_dicts(
                target, state, c2_conversion=loaded.get("__author__") == "Caffe2")
        elif model_prefix is not None and self._required != "nothing":
            if ckpt_prefix is None:
                sample = ", ".join(sorted(state)[:3])
                raise CheckpointError(
                    f"{source}: not a ViT checkpoint: no 'patch_embed.proj.weight' among its "
                    f"{len(state)} tensors (e.g. {sample}); the config builds "
                    f"{_backbone_name(model_prefix)}")
            got, want = vit_geometry(state, ckpt_prefix), vit_geometry(target, model_prefix)
            if got != want:
                raise CheckpointError(f"{source}: its backbone ViT ({got}) differs from the "
                                      f"model's ({want}): use the config it was trained with")
        loaded["model"] = state
        self._pending = LoadReport(source, "model", _model_format(ckpt_prefix), len(target))
        return loaded

    def _convert(self, loaded: Dict, state: Dict, model, model_prefix: str, num_target: int) -> Dict:
        """Use the checkpoint's ViT to initialise the model's (a plain ViT, or another detector's)."""
        source = self._source or "checkpoint"
        backbone = model.get_submodule(model_prefix[:-1]) if model_prefix else model
        try:
            converted, conversion = convert_plain_vit(state, backbone)
        except IncompatibleCheckpointError as e:
            if self._required != "nothing":
                hint = _fitting_hint(timm_named(state)[0], detector=bool(model_prefix))
                raise CheckpointError(f"{source}: {e}; {hint}") from None
            logger.warning(f"{source}: {e}; nothing loaded")
            converted, conversion = {}, None
        loaded["model"] = {model_prefix + k: v for k, v in converted.items()}
        self._pending = LoadReport(source, "converted into the backbone",
                                   conversion.source_format if conversion else "unusable",
                                   num_target, conversion=conversion)
        return loaded

    def _load_model(self, checkpoint):
        report = self._pending
        self._pending = None
        state = checkpoint["model"]
        model = unwrap_parallel(self.model)
        target = model.state_dict()
        # Counted here, before fvcore loads (its incompatible keys come after): a file that the
        # require level refuses never touches the model.
        report.missing = sorted(k for k in target if k not in state
                                and k.rsplit(".", 1)[-1] not in _NOT_FROM_CHECKPOINTS)
        report.unexpected = sorted(k for k in state if k not in target
                                   and "anchor_generator.cell_anchors" not in k)
        report.mismatched = [(k, tuple(state[k].shape), tuple(target[k].shape)) for k in target
                             if k in state and tuple(state[k].shape) != tuple(target[k].shape)]
        bad = set(report.missing) | {k for k, _, _ in report.mismatched}
        report.loaded = sorted(k for k in state if k in target and k not in bad)
        self._enforce(report)
        if self._resuming:
            self._check_optimizer_state(report.source, checkpoint)
        incompatible = super()._load_model(checkpoint)
        self.report = report
        return incompatible

    def _check_optimizer_state(self, source: str, checkpoint: Dict) -> None:
        """CheckpointError when a saved optimizer state is not its optimizer's or not finite."""
        model = unwrap_parallel(self.model)
        for _, optimizer, saved_state in self._optimizers():
            state = saved_state(checkpoint)
            if state is None:
                continue
            problem = optimizer_state_problem(optimizer, state, model)
            if problem:
                raise CheckpointError(f"{source}: its optimizer state does not fit the optimizer "
                                      f"({problem}); {_RESUME_ADVICE}")
            bad = non_finite_optimizer_state(optimizer, state, model)
            if bad:
                raise CheckpointError(
                    f"{source}: NaN or Inf in the optimizer state ({', '.join(bad[:3])}"
                    + (", ..." if len(bad) > 3 else "") + "): corrupt, or saved by a diverged "
                    "run; resume from an earlier checkpoint (name it in last_checkpoint)")

    def _log_incompatible_keys(self, incompatible) -> None:
        # The report replaces fvcore's per-key warnings: one summary, counted over the model.
        if self.report is not None:
            level = logging.WARNING if self.report.left_at_init else logging.INFO
            logger.log(level, self.report.summary())

    def _enforce(self, report: LoadReport) -> None:
        """Raise CheckpointError for what ``self._required`` does not accept."""
        if self._required in ("nothing", "architecture"):
            return
        if report.conversion is not None and self._required == "backbone":
            missing = report.conversion.missing_pretrained
            if missing:
                raise CheckpointError(
                    f"{report.source}: strict loading refused: {len(missing)} pre-trained backbone "
                    f"weights missing, mismatched or all zeros, e.g. {missing[:3]} (--allow-partial "
                    "/ strict=False loads it anyway)")
            return
        if self._required == "backbone":
            left = [k for k in report.left_at_init if model_part(k).startswith("backbone")]
            if left:
                raise CheckpointError(
                    f"{report.source}: strict loading refused: {len(left)} backbone weights missing "
                    f"or mismatched, e.g. {left[:3]}")
            return
        # "everything"
        if report.conversion is not None and report.left_at_init:
            parts = ", ".join(f"{p} ({n})" for p, n in report.parts_left_at_init().items())
            raise CheckpointError(
                f"{report.source}: strict loading refused: a plain ViT checkpoint "
                f"({report.source_format}, backbone weights only); {len(report.left_at_init)} model "
                f"tensors would stay random: {parts}. For inference pass a trained detector "
                "checkpoint (e.g. output/.../model_final.pth); to build a model for fine-tuning "
                "use strict=False (--allow-partial).")
        problems = ([f"missing {k}" for k in report.missing]
                    + [f"{k}: checkpoint {a} vs model {b}" for k, a, b in report.mismatched]
                    + [f"unexpected {k}" for k in report.unexpected])
        if problems:
            raise CheckpointError(
                f"{report.source}: strict loading refused: {len(problems)} model tensors "
                f"missing, mismatched or unexpected, e.g. {problems[:3]}"
                + _likely_cause(report) + self._how_to_force())

    # ------------------------------------------------------------------ writing
    def save(self, name: str, **kwargs) -> None:
        """
        detectron2's ``save``, except that weights holding a NaN or an Inf are not written
        (NonFiniteWeightsError; ``last_checkpoint`` keeps naming the previous file) and a failed write
        (full disk, read-only directory) is a CheckpointError naming its cause and the file.
        """
        if not (self.save_dir and self.save_to_disk):
            return super().save(name, **kwargs)
        bad = non_finite_tensors(unwrap_parallel(self.model).state_dict())
        if bad:
            raise NonFiniteWeightsError(
                f"NaN or Inf in {len(bad)} model tensors (e.g. {', '.join(bad[:3])}): "
                f"{name}.pth not saved")
        model = unwrap_parallel(self.model)
        for _, optimizer, _ in self._optimizers():
            bad = non_finite_optimizer_state(optimizer, model=model)
            if bad:
                raise NonFiniteWeightsError(f"NaN or Inf in the optimizer state ({', '.join(bad[:3])}"
                                            f"{', ...' if len(bad) > 3 else ''}): {name}.pth not saved")
        try:
            os.makedirs(self.save_dir, exist_ok=True)
            super().save(name, **kwargs)
        except (OSError, RuntimeError) as e:
            cause = os_error_behind(e)  # torch.save turns a failed write into a RuntimeError
            if cause is None:
                raise
            last = os.path.basename(self.get_checkpoint_file())
            raise CheckpointError(
                f"{cause.strerror or cause}: cannot save {os.path.join(self.save_dir, name)}.pth; "
                + (f"last_checkpoint still names {last}" if last else "no checkpoint saved yet")
            ) from None


def _floating_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype of the model's floating-point parameters (float32 when it has none)."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def _refuse_non_finite(source: str, state: Dict, dtype: torch.dtype) -> None:
    """CheckpointError when a tensor of ``state`` holds a NaN or an Inf once cast to ``dtype``."""
    bad = non_finite_tensors(state, dtype)
    if not bad:
        return
    overflow = [name for name in bad if name not in non_finite_tensors({name: state[name]})]
    wider = {str(getattr(state[name], "dtype", "")).replace("torch.", "") for name in overflow}
    beyond = (f" ({'/'.join(sorted(wider))} values beyond the model's "
              f"{str(dtype).replace('torch.', '')} range)" if overflow else "")
    raise CheckpointError(
        f"{source}: NaN or Inf in {len(bad)} of its {len(state)} tensors, e.g. "
        f"{', '.join(bad[:3])}{beyond}: corrupt, or saved by a diverged run")


def _is_plain_vit(state: Dict, prefix: Optional[str]) -> bool:
    """A ViT checkpoint with nothing but its backbone and the usual pre-training extras."""
    if prefix is None:
        return False
    others = [k for k in state if not k.startswith(prefix)]
    return prefix.count(".") <= 1 and all(k.startswith(_PLAIN_EXTRAS) for k in others)


def _model_format(prefix: Optional[str]) -> str:
    if prefix in _BACKBONE_NAMES:
        return _BACKBONE_NAMES[prefix].split(" ")[0] + " detector checkpoint"
    return "model checkpoint"


def _architecture_message(source: str, ckpt_prefix: str, model_prefix: str) -> str:
    return (f"{source}: this is an {_model_format(ckpt_prefix)} (keys {ckpt_prefix}*); "
            f"the config builds {_backbone_name(model_prefix)} (keys {model_prefix}*): use the "
            "config it was trained with")


def _likely_cause(report: LoadReport) -> str:
    for key, a, b in report.mismatched:
        if key.endswith("box_predictor.cls_score.weight"):
            return (f"; likely cause: model.roi_heads.num_classes differs (checkpoint {a[0] - 1} "
                    f"classes, config {b[0] - 1})")
    if any(k.startswith("roi_heads.mask_head") for k in report.missing):
        return "; likely cause: the checkpoint has no mask head (a box-only model?)"
    return ""


def _fitting_hint(state: Dict, detector: bool = True) -> str:
    """A config that fits a plain ViT of this geometry, or the overrides that make one; for a
    model that is itself the ViT (a classifier), the arguments to build it with."""
    from ..shipped_configs import configs_fitting

    prefix = vit_key_prefix(state)
    if prefix is None:
        return "it cannot be converted into a ViT backbone"
    geometry = vit_geometry(state, prefix)
    if not detector:
        return (f"build the model with embed_dim={geometry.width}, depth={geometry.depth}, "
                f"patch_size={geometry.patch_size} (timm: the hpvit_*_patch16_224 of that width)")
    names = configs_fitting(geometry)
    if names:
        return "configs that fit: " + ", ".join(names)
    node = "model.backbone.bottom_up"
    keys = f"{node}.embed_dim={geometry.width} {node}.num_heads={max(1, geometry.width // 64)}"
    if geometry.patch_size != 16:
        keys += f" {node}.patch_size={geometry.patch_size}"
    depth = (f"; with {node}.depth={geometry.depth}, also stage_depths and window_block_indexes "
             "that fit it" if geometry.depth != 12 else "")
    return (f"no shipped config fits; override an HPViT-B config's ViT: {keys}{depth} "
            "(model.backbone.net.* for a ViTDet config)")
