"""A DetectionCheckpointer that never leaves a partial file and never executes a checkpoint."""
import os
import random
import tempfile

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.utils.file_io import PathManager

from ..checkpoint import CheckpointError, load_checkpoint_file, safe_pickle_load, save_atomic

__all__ = ["SafeCheckpointer", "RNGState"]


class SafeCheckpointer(DetectionCheckpointer):
    """
    DetectionCheckpointer with two guarantees:
    - writing is atomic: the checkpoint goes to a temporary file renamed into place, then
      ``last_checkpoint`` is replaced the same way, so it never names a partial file;
    - reading executes nothing: ``.pth`` through ``torch.load(weights_only=True)``, ``.pkl``
      through an unpickler that admits only arrays, numbers, strings and containers.
    """

    def save(self, name: str, **kwargs) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        path = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {path}")
        save_atomic(data, path)
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-last_checkpoint", dir=self.save_dir)
        with os.fdopen(fd, "w") as f:
            f.write(last_filename_basename)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, os.path.join(self.save_dir, "last_checkpoint"))

    def _load_file(self, filename: str):
        if filename.endswith(".pkl"):
            with PathManager.open(filename, "rb") as f:
                try:
                    data = safe_pickle_load(f)
                except CheckpointError as e:
                    raise CheckpointError(f"{filename}: {e}") from None
            if "model" in data and "__author__" in data:
                return data
            data = data.get("blobs", data)
            data = {k: v for k, v in data.items() if not k.endswith("_momentum")}
            return {"model": data, "__author__": "Caffe2", "matching_heuristics": True}
        return super()._load_file(filename)

    def _torch_load(self, f: str):
        return load_checkpoint_file(f)


class RNGState:
    """
    Checkpointable random state of this process (Python, NumPy, torch CPU and CUDA) and the
    training sampler's seed, so that a resumed run draws the same numbers as an uninterrupted one.
    """

    def __init__(self, sampler_seed: int):
        self.sampler_seed = int(sampler_seed)
        self._loaded = None

    def state_dict(self):
        np_state = np.random.get_state()
        state = {
            "sampler_seed": self.sampler_seed,
            "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
            "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state):
        self._loaded = state
        self.restore()

    def restore(self):
        """Re-apply the last loaded state (after set-up that consumed random numbers)."""
        state = self._loaded
        if state is None:
            return
        self.sampler_seed = int(state["sampler_seed"])
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
        name, keys, *rest = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
