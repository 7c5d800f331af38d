"""Log files in plain text."""
import contextlib
import sys
from unittest import mock

__all__ = ["plain_config_log"]


def plain_config_log():
    """
    A context for detectron2's ``default_setup``: it logs the config highlighted with terminal
    colour codes, into log.txt too. Unless stdout is a terminal, the config is logged as plain
    text (detectron2's highlighter is bypassed for the call).
    """
    from detectron2.engine import defaults

    if sys.stdout.isatty():
        return contextlib.nullcontext()
    return mock.patch.object(defaults, "_highlight", lambda code, filename: code)
