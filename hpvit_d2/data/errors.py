"""
The base of the data errors that are the user's input (bad image, annotation, label map,
annotation file): :class:`UserDataError`, reported by the commands as one ``error:`` line.

An exception raised in a PyTorch data-loader worker reaches the main process rebuilt by
``torch.utils.data._utils.ExceptionWrapper.reraise`` as ``type(e)(text)``, where ``text`` is
"Caught X in DataLoader worker process N. Original Traceback ..." followed by the worker's whole
traceback: a 2,300-character "one line" with the cause at its end. :class:`UserDataError` takes
that text back to the original message (the last ``module.X: message`` of the traceback), so the
error reads the same from a worker as from the main process.
"""
import re

__all__ = ["UserDataError", "worker_message"]

_WORKER_PREFIX = re.compile(r"^Caught \w+ in DataLoader worker process \d+\.\nOriginal Traceback")


def worker_message(text: str, error_type: type) -> str:
    """The original message of ``error_type`` inside a data-loader worker's re-raised ``text``;
    ``text`` itself when it is not such a text."""
    if not isinstance(text, str) or not _WORKER_PREFIX.match(text):
        return text
    names = {f"{error_type.__module__}.{error_type.__qualname__}", error_type.__qualname__}
    start = max(text.rfind(f"\n{name}: ") + len(name) + 3 if f"\n{name}: " in text else -1
                for name in names)
    return text[start:].strip() if start > 0 else text


class UserDataError(ValueError):
    """A data error caused by the user's files; the message names the file and the fix. Built
    from a data-loader worker's re-raised text, it keeps the original message only."""

    def __init__(self, message="", *args):
        super().__init__(worker_message(message, type(self)), *args)
