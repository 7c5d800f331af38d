"""
The commands (argument parsing and messages over library calls). Nothing in the library imports
this package. Each module has a ``main(argv) -> exit code`` and an ``entry()`` for setup.py's
console scripts; ``projects/HPViT/*.py`` are the detectron2-style scripts that call them.

Importing this package silences the known third-party start-up warnings (before any command
module imports detectron2, torch.jit or timm), so that a command's first lines are its own.
"""
from .common import quiet_warnings

quiet_warnings()
