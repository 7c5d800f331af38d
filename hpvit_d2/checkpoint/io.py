"""Reading checkpoints without executing code, and writing them atomically."""
import io
import os
import pickle
import tempfile
from typing import Any

import torch

__all__ = ["CheckpointError", "load_checkpoint_file", "save_atomic", "safe_pickle_load"]


class CheckpointError(ValueError):
    """A checkpoint file cannot be read, is unsafe, or has an unknown layout."""


# Everything a detectron2 model-zoo .pkl needs: numpy arrays and scalars, plain containers.
_SAFE_PICKLE_GLOBALS = {
    ("collections", "OrderedDict"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "float32"),
    ("numpy", "float64"),
    ("numpy", "int64"),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _SAFE_PICKLE_GLOBALS:
            return super().find_class(module, name)
        raise CheckpointError(
            f"refusing to load {module}.{name}: this pickle wants to create an object that is not "
            "a numpy array, number, string or plain container, which could run arbitrary code"
        )


def safe_pickle_load(f) -> Any:
    """Unpickle a file object admitting only numpy arrays, numbers, strings and containers."""
    return _SafeUnpickler(f, encoding="latin1").load()


def load_checkpoint_file(path: str) -> Any:
    """
    Load a checkpoint file safely.

    ``.pkl`` files (detectron2 model-zoo format) go through a restricted unpickler; anything else
    through ``torch.load(weights_only=True)``. Paths may be URLs or detectron2:// paths (iopath).

    Raises:
        CheckpointError: the file is missing, unreadable, or would execute code when loaded.
    """
    from detectron2.utils.file_io import PathManager

    try:
        local = PathManager.get_local_path(path)
    except Exception as e:  # network failures, unknown handlers
        raise CheckpointError(f"{path}: cannot be fetched ({type(e).__name__}: {e}); "
                              "download it elsewhere and pass the local file") from e
    if not os.path.isfile(local):
        raise CheckpointError(f"{path}: no such file")
    try:
        if local.endswith(".pkl"):
            with open(local, "rb") as f:
                return safe_pickle_load(f)
        return torch.load(local, map_location="cpu", weights_only=True)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path}: not loadable with weights_only=True ({str(e).splitlines()[0]}); it is either "
            "corrupt or contains objects other than tensors and plain containers"
        ) from None
    except Exception as e:
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''})") from None


def save_atomic(obj: Any, path: str) -> None:
    """torch.save to a temporary file in the same directory, then rename it over ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pth", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            buf = io.BytesIO()
            torch.save(obj, buf)
            f.write(buf.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
