"""Training and evaluation entries (LazyConfig and yacs) with loud checkpoint loading."""
from .weights import load_weights

__all__ = ["load_weights"]
