"""What a checkpoint load did with every tensor, as a report grouped by model part."""
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from fvcore.common.checkpoint import _group_checkpoint_keys, _group_to_str

from .plain_vit import ConversionReport

__all__ = ["LoadReport", "model_part"]

_MAX_LISTED = 12


def model_part(key: str) -> str:
    """The part of a detector a key belongs to: ``roi_heads``, ``backbone.bottom_up``, ``pixel_mean``..."""
    parts = key.split(".")
    depth = 2 if parts[0] == "backbone" and len(parts) > 2 else 1
    return ".".join(parts[:depth])


def _grouped(keys: List[str]) -> List[str]:
    """fvcore's grouping of keys by module ('blocks.0.attn.{proj.bias, qkv.weight}'), capped."""
    lines = [head + _group_to_str(tails) for head, tails in sorted(_group_checkpoint_keys(keys).items())]
    if len(lines) > _MAX_LISTED:
        lines = lines[:_MAX_LISTED] + [f"... and {len(lines) - _MAX_LISTED} more modules"]
    return lines


@dataclass
class LoadReport:
    """
    One load into a model: the source, the conversion (for a plain ViT) and, against the whole
    model, what was loaded and what was left at initialisation.
    """

    source: str
    kind: str  # "converted into the backbone" (a ViT's weights) or "model" (the model's own keys)
    source_format: str
    num_model_tensors: int
    loaded: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    mismatched: List[Tuple[str, tuple, tuple]] = field(default_factory=list)
    conversion: Optional[ConversionReport] = None

    @property
    def left_at_init(self) -> List[str]:
        """Model tensors that did not come from the checkpoint (missing or shape-mismatched)."""
        return sorted(self.missing + [k for k, _, _ in self.mismatched])

    def parts_left_at_init(self) -> Dict[str, int]:
        """Tensors left at initialisation, counted by model part."""
        return dict(sorted(Counter(model_part(k) for k in self.left_at_init).items()))

    def summary(self) -> str:
        what = self.source_format if self.conversion is None else f"{self.source_format}, {self.kind}"
        lines = [f"Loaded {self.source} ({what}): "
                 f"{len(self.loaded)}/{self.num_model_tensors} model tensors"]
        if self.conversion is not None:
            c = self.conversion
            lines.append(f"  converted: backbone keys found under {c.source_prefix!r}"
                         + (f" ({c.source_geometry})" if c.source_geometry else "")
                         + f", {len(c.resized)} resized")
            lines += [f"    resized {k}: {a} -> {b}" for k, (a, b) in sorted(c.resized.items())]
            if c.all_zero:
                lines.append(f"  WARNING: {len(c.all_zero)} tensors are all zeros in the checkpoint "
                             f"(never trained?): {', '.join(c.all_zero[:_MAX_LISTED])}")
        if self.mismatched:
            lines.append(f"  shape mismatches (left at initialisation): {len(self.mismatched)}")
            lines += [f"    {k}: checkpoint {a} vs model {b}"
                      for k, a, b in self.mismatched[:_MAX_LISTED]]
        left = self.left_at_init
        lines.append(f"  left at initialisation: {len(left)} tensors"
                     + ("" if not left else ", by part: " + ", ".join(
                         f"{p} {n}" for p, n in self.parts_left_at_init().items())))
        lines += [f"    {g}" for g in _grouped(self.missing)]
        unused = self.unexpected + (self.conversion.unused if self.conversion else [])
        lines.append(f"  unused checkpoint tensors: {len(unused)}")
        lines += [f"    {g}" for g in _grouped(unused)]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()
