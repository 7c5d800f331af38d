"""The random state of the training process, as a checkpointable."""
import random
from typing import Any, Dict

import numpy as np
import torch

__all__ = ["RNGState"]


class RNGState:
    """
    Checkpointable random state of this process: Python's, NumPy's, torch's CPU and CUDA
    generators (drop path, dropout and anything else the model draws), so a resumed run draws the
    numbers an uninterrupted one would. Data sampling and augmentation have their own seeds
    (hpvit_d2.data.loader).
    """

    def state_dict(self) -> Dict[str, Any]:
        version, internal, gauss = random.getstate()
        name, keys, *rest = np.random.get_state()
        state = {
            "python": [version, list(internal), gauss],
            "numpy": [name, torch.from_numpy(keys.astype(np.int64)), *rest],
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
        name, keys, *rest = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
