"""
HPViT for Detectron2.

``import hpvit_d2`` is light and changes nothing: it imports neither torch nor timm nor detectron2
(the commands' ``--help`` answers before any of them loads) and installs no warning filter
(:func:`quiet_warnings` does, when called: ``hpvit_d2.known_warnings``). The modules that need
torch import it: ``hpvit_d2.model_zoo``, ``hpvit_d2.modeling``, ... timm's ``hpvit_*`` classifiers
are registered by ``import hpvit_d2.timm_models`` (which the classification command does itself).
"""
__version__ = "0.3.0"

from .known_warnings import quiet_warnings  # noqa: E402

__all__ = ["quiet_warnings"]
