"""
One training run per output directory, and a clean start in it.

:func:`claim_output_dir` takes an exclusive ``fcntl.flock`` on ``OUTPUT_DIR/.hpvit-train.lock``
and holds it for the life of the process. The kernel releases it when the process ends, however
it ends (SIGKILL included), so a lock left by a dead run never blocks, while a second run started
in the directory of a live one is refused at once, before it writes anything there. Processes
forked afterwards (data-loader workers) do not hold it. Once the lock is held, the ``.tmp-*``
files of a save that was killed half-way are removed: no live run can be writing them.
"""
import fcntl
import logging
import os
from typing import Dict

from ..overrides import ConfigError

__all__ = ["LOCK_NAME", "OutputDirInUseError", "claim_output_dir"]

logger = logging.getLogger("hpvit_d2")

LOCK_NAME = ".hpvit-train.lock"
_held: Dict[str, int] = {}  # real path of the directory -> descriptor of its locked file


class OutputDirInUseError(ConfigError):
    """``train.output_dir`` belongs to a training run that is still alive."""


def _close_in_child() -> None:
    # A forked child shares the lock's open file; closing its descriptor (never LOCK_UN, which
    # would release the parent's lock) leaves the lock to the parent alone.
    for fd in _held.values():
        os.close(fd)
    _held.clear()


os.register_at_fork(after_in_child=_close_in_child)


def claim_output_dir(output_dir: str) -> None:
    """
    Make ``output_dir`` this process's own for as long as it lives (once per process; calling it
    again for the same directory does nothing), then remove leftover ``.tmp-*`` files there.

    Raises:
        OutputDirInUseError: a live process holds the directory (its pid is named).
        ConfigError: the directory cannot be created or written (read-only, no permission).
    """
    path = os.path.realpath(output_dir)
    if path in _held:
        return
    lock_path = os.path.join(path, LOCK_NAME)
    try:
        os.makedirs(path, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as e:
        raise ConfigError(f"train.output_dir {output_dir} is not writable ({e.strerror}): "
                          "choose another train.output_dir") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise OutputDirInUseError(
            f"train.output_dir {output_dir} is in use by a running training (pid {holder}): "
            "wait for it to end, stop it, or choose another train.output_dir") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _held[path] = fd
    _remove_leftover_temporary_files(path)


def _remove_leftover_temporary_files(path: str) -> None:
    """The ``.tmp-*`` files an interrupted atomic save left (see ``hpvit_d2.checkpoint.io``)."""
    removed = []
    for name in sorted(os.listdir(path)):
        file = os.path.join(path, name)
        if name.startswith(".tmp-") and os.path.isfile(file):
            os.remove(file)
            removed.append(name)
    if removed:
        logger.info(f"Removed {len(removed)} temporary files an interrupted save left in {path}: "
                    + ", ".join(removed[:3]) + (" ..." if len(removed) > 3 else ""))
