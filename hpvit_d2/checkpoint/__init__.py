"""Reading and writing weights: one checkpointer (safe, converting, strict on request, reporting)."""
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
from .report import LoadReport

__all__ = [
    "AtomicFile",
    "AtomicPathManager",
    "CheckpointError",
    "HPViTCheckpointer",
    "LoadReport",
    "NonFiniteWeightsError",
    "REQUIRE_LEVELS",
    "load_checkpoint_file",
    "non_finite_tensors",
    "safe_pickle_load",
    "save_atomic",
]
