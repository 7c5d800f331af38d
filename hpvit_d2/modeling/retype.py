"""Another forward for a built module, in place: the one way modules change class here."""
import torch.nn as nn

__all__ = ["retype"]


def retype(module: nn.Module, cls: type) -> nn.Module:
    """
    ``module`` made a ``cls``, in place. ``cls`` is a subclass of the module's class that adds no
    state, or a base class (to undo that), so parameters, buffers and state-dict keys stay.
    """
    if type(module) is not cls:
        if not (issubclass(cls, type(module)) or issubclass(type(module), cls)):
            raise TypeError(f"{type(module).__name__} cannot become a {cls.__name__}: neither "
                            "class derives from the other")
        module.__class__ = cls
    return module
