"""
The lab: the harnesses that run the project's experiments and write the README's measured blocks
(``make demo``, ``make reproduce``, ``make bench`` ...), beside the library as detectron2 keeps
``tools/`` and ``projects/`` beside ``detectron2/``. Not part of the wheel; it uses the library
only through its public modules, and the library never imports it.

Run a harness as ``python -m hpvit_lab.NAME`` with ``projects/HPViT`` on ``PYTHONPATH`` (the
Makefile sets it). Importing this package puts that folder on ``PYTHONPATH`` for the harnesses'
own subprocesses (pre-training, benchmark rows).
"""
import os

from hpvit_d2.cli import common as _common  # noqa: F401  (silences the known start-up warnings)

LAB_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
if LAB_ROOT not in _paths:
    os.environ["PYTHONPATH"] = os.pathsep.join([LAB_ROOT, *filter(None, _paths)])
