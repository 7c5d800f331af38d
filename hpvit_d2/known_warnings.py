"""
The one place warnings are handled: the third-party notices a user of this package sees on every
run and cannot act on, and :func:`quiet_warnings`, which silences them.

Nothing calls it on import. The commands call it at start (``hpvit_d2.cli.common.run``), for the
processes they start too; the lab at its import; the tests through ``tests/conftest.py``; a
script of yours may call ``hpvit_d2.quiet_warnings()``. ``HPVIT_SHOW_WARNINGS=1`` keeps them all.
"""
import logging
import os
import warnings

__all__ = ["KNOWN_WARNINGS", "QUIET_WARNINGS", "quiet_warnings"]

# (category, message regex, where it comes from): printed on every run by today's dependencies.
KNOWN_WARNINGS = (
    (FutureWarning, r"`torch\.jit\.script` is deprecated", "torch, on detectron2's import"),
    (UserWarning, r"pkg_resources is deprecated", "setuptools, on detectron2.model_zoo's import"),
    (FutureWarning, r"Importing from timm\.models\.layers is deprecated", "timm, on detectron2's import"),
    (UserWarning, r"torch\.meshgrid\b.* upcoming release", "torch, in detectron2's anchors"),
    (UserWarning, r"TypedStorage is deprecated", "torch, in detectron2's checkpoint loading"),
)
# What quiet_warnings silences: the known warnings, and every future or deprecation notice of the
# dependencies (a command's output is its own), and torch's notice about weights_only.
QUIET_WARNINGS = tuple((category, message) for category, message, _ in KNOWN_WARNINGS) + (
    (FutureWarning, r".*"),
    (DeprecationWarning, r".*"),
    (UserWarning, r".*weights_only"),
)
# The same for child processes, as PYTHONWARNINGS (categories only: it cannot hold a regex).
_CHILD_PYTHONWARNINGS = "ignore::FutureWarning,ignore::DeprecationWarning"
# Loggers (logging, not warnings) silenced below ERROR: torch.fx logs whenever detectron2 asks
# whether it is traced; torch's cpp_extension logs "No CUDA runtime is found, using CUDA_HOME=..."
# on detectron2's import on a machine with a CUDA toolkit and no GPU.
_NOISY_LOGGERS = ("torch.fx._symbolic_trace", "torch.utils.cpp_extension")


def quiet_warnings(child_processes: bool = False) -> None:
    """
    Install the filters of :data:`QUIET_WARNINGS` in this process and quiet the noisy loggers
    (not with ``HPVIT_SHOW_WARNINGS=1``). With ``child_processes``, also set ``PYTHONWARNINGS``
    (unless set) for the processes this one starts: only a command that owns its process does.
    """
    if os.environ.get("HPVIT_SHOW_WARNINGS", "0") not in ("", "0"):
        return
    for category, message in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    if child_processes:
        os.environ.setdefault("PYTHONWARNINGS", _CHILD_PYTHONWARNINGS)
