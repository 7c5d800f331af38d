"""
The third-party warnings a user of this package sees on every run and cannot act on, silenced by
their exact messages: importing ``hpvit_d2`` installs the filters, so the commands and the
README's Python snippets print only their own lines. ``HPVIT_SHOW_WARNINGS=1`` keeps them all.

Each entry is (category, message regex, where it comes from).
"""
import logging
import os
import warnings

__all__ = ["KNOWN_WARNINGS", "silence_known_warnings"]

KNOWN_WARNINGS = (
    (FutureWarning, r"`torch\.jit\.script` is deprecated", "torch, on detectron2's import"),
    (UserWarning, r"pkg_resources is deprecated", "setuptools, on detectron2.model_zoo's import"),
    (FutureWarning, r"Importing from timm\.models\.layers is deprecated", "timm, on detectron2's import"),
    (UserWarning, r"torch\.meshgrid: in an upcoming release", "torch, in detectron2's anchors"),
    (UserWarning, r"TypedStorage is deprecated", "torch, in detectron2's checkpoint loading"),
)
# Loggers (logging, not warnings) silenced below ERROR: torch.fx logs whenever detectron2 asks
# whether it is traced; torch's cpp_extension logs "No CUDA runtime is found, using CUDA_HOME=..."
# on detectron2's import on every machine with a CUDA toolkit and no GPU.
_NOISY_LOGGERS = ("torch.fx._symbolic_trace", "torch.utils.cpp_extension")


def silence_known_warnings() -> None:
    """Install the filters of :data:`KNOWN_WARNINGS` (not with ``HPVIT_SHOW_WARNINGS=1``)."""
    if os.environ.get("HPVIT_SHOW_WARNINGS", "0") not in ("", "0"):
        return
    for category, message, _ in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
