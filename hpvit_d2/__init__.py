"""HPViT for Detectron2 (and timm: importing the package registers the ``hpvit_*`` classifiers)."""
__version__ = "0.3.0"

from .known_warnings import silence_known_warnings  # noqa: E402

silence_known_warnings()  # before timm and detectron2 are imported

from . import timm_models  # noqa: E402,F401  (registers names only; imports timm, not detectron2)
