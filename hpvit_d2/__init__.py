"""
HPViT for Detectron2.

``import hpvit_d2`` is light: it imports neither torch nor timm nor detectron2 (the commands'
``--help`` answers before any of them loads); it only installs the known-warning filters. The
modules that need them import them: ``hpvit_d2.model_zoo``, ``hpvit_d2.modeling``, ...
timm's ``hpvit_*`` classifiers are registered by ``import hpvit_d2.timm_models`` (which the
classification command does itself).
"""
__version__ = "0.3.0"

from .known_warnings import silence_known_warnings  # noqa: E402

silence_known_warnings()  # before timm and detectron2 are imported
