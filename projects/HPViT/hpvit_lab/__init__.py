"""
The lab: the harnesses that run the project's experiments and write the README's measured blocks
(``make demo``, ``make reproduce``, ``make bench`` ...), beside the library as detectron2 keeps
``tools/`` and ``projects/`` beside ``detectron2/``. Not part of the wheel; it uses the library
only through its public modules, and the library never imports it.

Run a harness as ``python -m hpvit_lab.NAME`` with ``projects/HPViT`` on ``PYTHONPATH`` (the
Makefile sets it). Importing this package leaves the environment alone: the harnesses give the
processes they start :func:`lab_env`. It silences the known third-party warnings in this process
(``hpvit_d2.known_warnings``), before a harness imports detectron2.
"""
import os
from typing import Mapping, Optional

from hpvit_d2.known_warnings import quiet_warnings

LAB_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

quiet_warnings()


def lab_env(base: Optional[Mapping[str, str]] = None, **variables: str) -> dict:
    """``base`` (default: this process's environment) with ``variables`` set and ``LAB_ROOT`` first
    on ``PYTHONPATH``, for a subprocess that runs ``python -m hpvit_lab...``."""
    env = dict(os.environ if base is None else base, **variables)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != LAB_ROOT]
    env["PYTHONPATH"] = os.pathsep.join([LAB_ROOT, *paths])
    return env
