"""
Reading checkpoint files without executing code, and writing files atomically.

Formats read: ``.pth``/``.pt``/anything torch saved (``torch.load(weights_only=True)``),
``.pkl`` (detectron2 model-zoo; an unpickler that admits only arrays, numbers, strings and
containers), ``.safetensors``, and Hugging Face ``save_pretrained`` directories
(``config.json`` + ``model.safetensors``).
"""
import contextlib
import json
import os
import pickle
import tempfile
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

__all__ = [
    "AtomicFile",
    "AtomicPathManager",
    "CheckpointError",
    "HF_SUPPORTED_MODEL_TYPES",
    "NonFiniteWeightsError",
    "check_hf_architecture",
    "checkpoint_fields",
    "current_umask",
    "fetch_weights",
    "load_checkpoint_file",
    "non_finite_tensors",
    "os_error_behind",
    "read_weights",
    "resolve_weights_path",
    "safe_pickle_load",
    "save_atomic",
]

# Hugging Face `model_type`s whose encoder converts to a ViT (config.json's "model_type").
HF_SUPPORTED_MODEL_TYPES = ("vit", "vit_mae", "deit")
HF_GELU = ("gelu", "gelu_python")  # transformers' names of torch's exact GELU (nn.GELU)
HF_CONFIG = "config.json"
HF_WEIGHTS = "model.safetensors"


class CheckpointError(ValueError):
    """A checkpoint file cannot be read, is unsafe, or does not fit the model; names the file."""


class NonFiniteWeightsError(FloatingPointError):
    """Weights to be saved hold a NaN or an Inf: nothing was written."""


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


def safe_pickle_load(f, encoding: str = "latin1") -> Any:
    """Unpickle a file object admitting only numpy arrays, numbers, strings and containers."""
    return _SafeUnpickler(f, encoding=encoding).load()


def check_hf_architecture(directory: str) -> Dict[str, Any]:
    """
    The ``config.json`` of a Hugging Face model directory, checked to be a ViT, ViTMAE or DeiT
    whose blocks compute GELU, as the ViT blocks it converts into do.

    Raises:
        CheckpointError: no readable config.json, another architecture or activation (named).
    """
    path = os.path.join(directory, HF_CONFIG)
    try:
        with open(path) as f:
            config = json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{directory}: not a Hugging Face model directory ({HF_CONFIG} "
                              f"unreadable: {e})") from None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type not in HF_SUPPORTED_MODEL_TYPES:
        arch = ", ".join(config.get("architectures") or []) if isinstance(config, dict) else ""
        raise CheckpointError(
            f"{directory}: a Hugging Face '{model_type}' model ({arch or 'no architectures'}), "
            f"not a plain ViT; supported model types: {', '.join(HF_SUPPORTED_MODEL_TYPES)}")
    act = config.get("hidden_act", "gelu")
    if act not in HF_GELU:
        raise CheckpointError(
            f"{directory}: its blocks use hidden_act {act!r}, but the ViT blocks here compute "
            "GELU (hidden_act 'gelu'): converted, they would compute another function")
    return config


def resolve_weights_path(path: str) -> str:
    """
    The weights file of ``path``: itself, or ``model.safetensors`` of a Hugging Face directory
    (whose config.json is checked first). A ``?query`` suffix is kept.

    Raises:
        CheckpointError: a directory that is not a supported Hugging Face model.
    """
    local, sep, query = path.partition("?")
    if os.path.isdir(local):
        check_hf_architecture(local)
        weights = os.path.join(local, HF_WEIGHTS)
        if not os.path.isfile(weights):
            shards = os.path.join(local, HF_WEIGHTS + ".index.json")
            detail = ("its weights are sharded (model.safetensors.index.json): save it with a "
                      "larger max_shard_size" if os.path.isfile(shards) else f"no {HF_WEIGHTS}")
            raise CheckpointError(f"{local}: {detail}")
        return weights + sep + query
    return path


def _hf_sidecar_check(path: str) -> None:
    """A ``.safetensors`` file next to a config.json is checked like its directory."""
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isfile(os.path.join(directory, HF_CONFIG)):
        check_hf_architecture(directory)


def fetch_weights(path: str) -> Tuple[str, str]:
    """
    ``path`` resolved once (a Hugging Face directory to its ``model.safetensors``; URLs and
    detectron2:// paths fetched and cached by iopath): ``(resolved path, local file)``. A
    ``?query`` suffix is dropped.

    Raises:
        CheckpointError: the file is missing or cannot be fetched.
    """
    from detectron2.utils.file_io import PathManager

    path = resolve_weights_path(path.split("?", 1)[0])
    try:
        local = PathManager.get_local_path(path)
    except Exception as e:  # network failures, unknown handlers
        raise CheckpointError(f"{path}: cannot be fetched ({type(e).__name__}: {e}); "
                              "download it elsewhere and pass the local file") from None
    if not os.path.isfile(local):
        raise CheckpointError(f"{path}: no such file")
    return path, local


def read_weights(local: str, name: Optional[str] = None) -> Any:
    """
    Read the local checkpoint file ``local`` safely (see the module docstring for formats);
    errors name ``name`` (default: ``local``), e.g. the URL it was fetched from.

    Raises:
        CheckpointError: the file is unreadable, or would execute code when loaded.
    """
    name = name or local
    try:
        if local.endswith(".pkl"):
            with open(local, "rb") as f:
                return safe_pickle_load(f)
        if local.endswith(".safetensors"):
            from safetensors.torch import load_file

            _hf_sidecar_check(local)
            return load_file(local)
        return torch.load(local, map_location="cpu", weights_only=True)
    except CheckpointError as e:
        raise CheckpointError(f"{name}: {e}" if not str(e).startswith(name) else str(e)) from None
    except pickle.UnpicklingError:
        raise CheckpointError(f"{name}: {_why_unpickling_failed(local)}") from None
    except Exception as e:
        message = str(e).splitlines()[0] if str(e) else ""
        raise CheckpointError(f"{name}: unreadable checkpoint ({type(e).__name__}: {message})") from None


def _why_unpickling_failed(local: str) -> str:
    """What to tell a user whose file ``torch.load(weights_only=True)`` refused, from its first
    bytes (torch's own text suggests turning the safety check off, which this project never does)."""
    with open(local, "rb") as f:
        head = f.read(8)
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":  # torch's zip, or a pickle
        return ("refused: it holds objects other than tensors and plain containers (loading it "
                "would run code), or it is corrupt; save its state_dict alone and convert that")
    return (f"not a checkpoint (a .pth/.pt file starts as a zip or a pickle; this one starts with "
            f"{head!r}); give a .pth/.pt, .pkl or .safetensors file or a Hugging Face directory")


def checkpoint_fields(path: str, names: Sequence[str]) -> Dict[str, Any]:
    """
    The entries ``names`` of the dict a checkpoint file holds (e.g. ``iteration``), read without
    loading its tensors (memory-mapped, for files ``torch.save`` wrote; other formats are read
    whole). Entries the file lacks are left out; an unreadable file gives ``{}``.
    """
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        try:
            loaded = read_weights(path)
        except CheckpointError:
            return {}
    if not isinstance(loaded, dict):
        return {}
    return {name: loaded[name] for name in names if name in loaded}


def load_checkpoint_file(path: str) -> Any:
    """
    Load a checkpoint safely: :func:`fetch_weights` then :func:`read_weights`. Paths may be URLs
    or detectron2:// paths, or Hugging Face model directories.

    Raises:
        CheckpointError: the file is missing, unreadable, or would execute code when loaded.
    """
    path, local = fetch_weights(path)
    return read_weights(local, path)


def non_finite_tensors(state: Dict[str, Any], dtype: Optional[torch.dtype] = None) -> List[str]:
    """
    Names of the floating-point tensors or arrays of ``state`` that hold a NaN or an Inf, as they
    are or, with ``dtype``, once cast to it (a float64 value beyond float32's range is Inf in a
    float32 model).
    """
    import numpy as np

    bad = []
    for name, value in state.items():
        if isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.floating):
            value = torch.from_numpy(value)
        if not (isinstance(value, torch.Tensor) and value.is_floating_point()):
            continue
        if dtype is not None and torch.finfo(value.dtype).max > torch.finfo(dtype).max:
            value = value.to(dtype)
        if not bool(torch.isfinite(value).all()):
            bad.append(name)
    return bad


def current_umask() -> int:
    """The process umask (read without changing it where /proc allows; else set and restored)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class AtomicFile:
    """
    A file opened for writing (mode ``"w"``, ``"wb"``, ``"x"``...) at a temporary ``.tmp-*`` path
    in ``path``'s directory, flushed, synced and renamed onto ``path`` when closed cleanly (as a
    context manager, or by ``close()``); on an error (a full disk), or leaving a ``with`` block by
    an exception, the temporary file is removed and ``path`` is left as it was. The file gets the
    permissions of the umask (0o666 minus it, or ``permissions``), not the 0600 of temporary
    files. Every other attribute is the open file's (``write``, ``tell``...).
    """

    def __init__(self, path: str, mode: str = "wb", permissions: Optional[int] = None):
        self.path = str(path)
        self.permissions = permissions
        directory = os.path.dirname(os.path.abspath(self.path))
        fd, self.tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
        self.file = os.fdopen(fd, mode.replace("x", "w"))
        self._done = False

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self):
        return self.file

    def __exit__(self, exc_type, exc, tb):
        self._finish(commit=exc_type is None)
        return False

    def close(self) -> None:
        self._finish(commit=True)

    def _finish(self, commit: bool) -> None:
        if self._done:
            return
        self._done = True
        try:
            try:
                if commit:
                    self.file.flush()
                    os.fsync(self.file.fileno())
            finally:
                self.file.close()
            if commit:
                os.chmod(self.tmp, 0o666 & ~current_umask() if self.permissions is None
                         else self.permissions)
                os.replace(self.tmp, self.path)
                return
        except BaseException:  # the flush, fsync or close failed (a full disk): no file is left
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.tmp)
            raise
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp)


class AtomicPathManager:
    """detectron2's ``PathManager``, except that local files opened to be written from the start
    (modes ``w``, ``x``) are :class:`AtomicFile` (appends and remote paths are iopath's own)."""

    def __getattr__(self, name):
        from detectron2.utils.file_io import PathManager

        return getattr(PathManager, name)

    def open(self, path: str, mode: str = "r", **kwargs):
        if any(c in mode for c in "wx") and "://" not in str(path):
            return AtomicFile(str(path), mode)
        from detectron2.utils.file_io import PathManager

        return PathManager.open(path, mode, **kwargs)


def os_error_behind(error: BaseException) -> Optional[OSError]:
    """The OSError behind ``error`` (itself, or what it was raised while handling: torch.save
    turns a failed write into a RuntimeError), or None."""
    while error is not None and not isinstance(error, OSError):
        error = error.__context__
    return error


def save_atomic(obj: Any, path: str, mode: Optional[int] = None) -> None:
    """
    ``torch.save`` through :class:`AtomicFile`: a crash mid-write never leaves a partial file at
    ``path``. The file gets ``mode`` (default: 0o666 minus the umask, as ``open`` would give it).
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with AtomicFile(path, "wb", permissions=mode) as f:
        torch.save(obj, f)
