"""
README blocks written by the lab's measuring commands.

Every figure in a README sits between ``<!-- begin: NAME -->`` and ``<!-- end: NAME -->`` and is
written by the command that measured it (its ``--readme FILE`` flag), with that command in the
block's caption (``command_line``): numbers are regenerated, never edited by hand.
"""
import os
import tempfile
from typing import Sequence

from hpvit_d2.overrides import ConfigError

__all__ = ["command_line", "update_readme_block"]


def command_line(module: str, argv: Sequence[str]) -> str:
    """``python -m MODULE ARGS`` as a user would type it again, without ``--readme FILE`` (or
    ``--readme=FILE``)."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--readme":
            skip = True
        elif not arg.startswith("--readme="):
            kept.append(arg)
    return " ".join(["python -m", module, *kept])


def update_readme_block(readme: str, name: str, text: str) -> None:
    """
    Replace the text between ``<!-- begin: NAME -->`` and ``<!-- end: NAME -->`` in ``readme``.
    The file is replaced atomically (a temporary file beside it, then ``os.replace``), so an
    interrupted write never leaves a half-written README.

    Raises:
        ConfigError: the file or the markers are missing.
    """
    begin, end = f"<!-- begin: {name} -->", f"<!-- end: {name} -->"
    try:
        with open(readme) as f:
            content = f.read()
    except OSError as e:
        raise ConfigError(f"--readme {readme}: cannot be read ({e})") from None
    if content.count(begin) != 1 or content.count(end) != 1 or content.index(begin) > content.index(end):
        raise ConfigError(f"--readme {readme}: expected one '{begin}' ... '{end}' block; add the "
                          f"two marker lines where the table belongs")
    head, rest = content.split(begin)
    _, tail = rest.split(end)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(readme)), suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(f"{head}{begin}\n{text.strip()}\n{end}{tail}")
        os.replace(tmp, readme)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
