"""HPViT for Detectron2 (and timm: importing the package registers the ``hpvit_*`` classifiers)."""
__version__ = "0.3.0"

from . import timm_models  # noqa: E402,F401  (registers names only; imports timm, not detectron2)
