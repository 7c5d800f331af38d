"""Reading and writing weights: one checkpointer (safe, converting, strict on request, reporting),
and the conversion of plain-ViT formats it applies (:mod:`.plain_vit`)."""
from .checkpointer import REQUIRE_LEVELS, HPViTCheckpointer
from .io import (
    AtomicFile,
    AtomicPathManager,
    CheckpointError,
    NonFiniteWeightsError,
    load_checkpoint_file,
    non_finite_tensors,
    safe_pickle_load,
    save_atomic,
)
from .plain_vit import (
    ConversionReport,
    IncompatibleCheckpointError,
    checkpoint_filter_fn,
    convert_plain_vit,
)
from .report import LoadReport

__all__ = [
    "AtomicFile",
    "AtomicPathManager",
    "CheckpointError",
    "ConversionReport",
    "HPViTCheckpointer",
    "IncompatibleCheckpointError",
    "LoadReport",
    "NonFiniteWeightsError",
    "REQUIRE_LEVELS",
    "checkpoint_filter_fn",
    "convert_plain_vit",
    "load_checkpoint_file",
    "non_finite_tensors",
    "safe_pickle_load",
    "save_atomic",
]
