"""
What every command shares: one error style and quiet start-up.

- A user error (bad config, override, weights, device, dataset, image; a non-finite loss) is one
  line on stderr, ``error: <what> ...: <fix>``, and exit code 2; ``--debug`` shows the traceback.
- Known third-party warnings are silenced at start, in this process and the ones it starts
  (:func:`run` calls ``hpvit_d2.known_warnings.quiet_warnings``, the one place they are handled).
- An optional dependency that is not installed (``onnx``/``onnxruntime`` for an ONNX export) is
  one line naming the wheel's extra to install, ``pip install 'hpvit_d2[onnx]'``, and exit code 3.
- One command line: ``--config-file NAME`` (a path or a shipped config's name), positional
  ``KEY=VALUE`` overrides (``--opts KEY=VALUE ...`` as an alias, as detectron2's tools spell it),
  flags before or after the overrides, and ``usage:`` naming the program as it was called. A flag
  that stands for an override (``--device D``: ``train.device=D``; hpvit-train's ``--output DIR``:
  ``train.output_dir=DIR``) is added to the overrides, after those written out.
- ``--help`` (and a usage error) answers before torch, timm or detectron2 is imported: a command
  module imports only the standard library and this module at its top, builds its parser from
  them, and imports the rest in the functions that run after parsing (``import hpvit_d2`` is
  light too). tests/test_command_line.py checks that no console script's ``--help`` imports torch.
"""
import argparse
import os
import sys
from typing import Callable, Sequence, Tuple, Type

from ..known_warnings import quiet_warnings

__all__ = ["EXIT_OK", "EXIT_FAILED_INPUTS", "EXIT_USAGE", "EXIT_MISSING_EXTRA", "MissingExtraError",
           "add_debug_flag", "add_device_flag", "add_override_flag", "add_overrides",
           "add_register_coco_flag", "check_output_path", "log_to_stderr",
           "parse_command", "program_name", "quiet_warnings", "register_datasets", "require_extra",
           "run", "user_errors"]

EXIT_OK = 0
EXIT_FAILED_INPUTS = 1  # some inputs could not be processed (demo), the rest were
EXIT_USAGE = 2  # bad config, override, weights, device, dataset: nothing was done
EXIT_MISSING_EXTRA = 3  # an optional dependency is not installed: nothing was done


def user_errors() -> Tuple[Type[BaseException], ...]:
    """Exception types that are the user's input, not a bug: reported in one line."""
    from ..checkpoint import CheckpointError
    from ..data.datasets import DatasetFormatError, DatasetNotFoundError
    from ..data.annotations import BadAnnotationError
    from ..data.images import BadImageError
    from ..overrides import ConfigError

    return (ConfigError, CheckpointError, DatasetNotFoundError, DatasetFormatError, BadImageError,
            BadAnnotationError, FloatingPointError)


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the wheel's extra."""


def require_extra(extra: str, modules: Sequence[str], needed_by: str) -> None:
    """
    Import ``modules`` (setup.py's ``extras_require[extra]``), or raise MissingExtraError naming
    those missing and ``pip install 'hpvit_d2[extra]'``. ``needed_by``: what needs them, as the
    user asked for it (``--format onnx``).
    """
    import importlib

    missing = []
    for module in modules:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module and not (e.name or "").startswith(module + "."):
                raise  # the module is there but one of its own dependencies is not
            missing.append(module)
    if missing:
        raise MissingExtraError(
            f"{needed_by} needs {' and '.join(missing)}, not installed: pip install "
            f"'hpvit_d2[{extra}]' (make setup installs it in a checkout)")


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error instead of its one-line message")


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text if text else type(error).__name__


def run(main: Callable[[Sequence[str]], int], argv: Sequence[str] = None) -> int:
    """
    ``main(argv)`` with the shared error style; returns the exit code (``sys.exit`` it).
    ``--debug`` anywhere in argv lets exceptions through.
    """
    quiet_warnings(child_processes=True)
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return main(argv)
    except SystemExit:  # --help, a usage error: argparse's exit, before anything heavy is imported
        raise
    except MissingExtraError as e:
        if "--debug" in argv:
            raise
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return EXIT_MISSING_EXTRA
    except user_errors() as e:  # (evaluated only for an exception: it imports the library)
        if "--debug" in argv:
            raise
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def program_name(console: str) -> str:
    """The name ``usage:`` shows: a script as called (``train_net.py``), else the console command
    (``hpvit-train``, also for ``python -m hpvit_d2...``, whose argv[0] is the module's file)."""
    called = sys.argv[0] if sys.argv and sys.argv[0] else ""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not called.endswith(".py") or os.path.abspath(called).startswith(package + os.sep):
        return console
    return os.path.basename(called)


def add_overrides(parser: argparse.ArgumentParser) -> None:
    """Positional ``KEY=VALUE`` config overrides, and ``--opts KEY=VALUE ...`` for the same."""
    parser.add_argument("opts", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides, e.g. train.device=cpu (checked: an unknown key is "
                             "refused with the closest one); +KEY=VALUE adds a key")
    parser.add_argument("--opts", dest="more_opts", nargs="*", default=[], metavar="KEY=VALUE",
                        help="the same overrides, as detectron2's tools take them")


def add_override_flag(parser: argparse.ArgumentParser, flag: str, key: str, **kwargs) -> None:
    """``flag VALUE`` as a short spelling of the config override ``key=VALUE`` (parse_command
    adds it to the overrides)."""
    action = parser.add_argument(flag, default=None, **kwargs)
    parser.set_defaults(_override_flags={**(parser.get_default("_override_flags") or {}),
                                         action.dest: key})


def add_device_flag(parser: argparse.ArgumentParser) -> None:
    """``--device``, the same on every command that runs a model: ``train.device=`` here."""
    add_override_flag(parser, "--device", "train.device", metavar="DEVICE",
                      help="cpu, cuda, cuda:1 ... (the override train.device=DEVICE; default: "
                           "the config's)")


def _quoted(value: str) -> str:
    """``value`` as a quoted string of the override grammar (paths with , = [ ] or spaces)."""
    return "'" + value.replace("'", "\\'") + "'"


def parse_command(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """``argv`` parsed with flags accepted before or after the overrides (argparse's intermixed
    parsing); ``--opts`` values are appended to the positional ones in ``args.opts``, then the
    overrides that flags stand for (:func:`add_override_flag`; also in ``args.flag_overrides``)."""
    args = parser.parse_intermixed_args(argv)
    args.flag_overrides = [f"{key}={_quoted(getattr(args, dest))}"
                           for dest, key in (getattr(args, "_override_flags", None) or {}).items()
                           if getattr(args, dest) is not None]
    args.opts = [*args.opts, *args.more_opts, *args.flag_overrides]
    return args


def log_to_stderr() -> None:
    """The library's log lines (``hpvit_d2.*`` loggers: the load report, ...) on stderr, once each,
    for the commands that do not set up detectron2's logger (train and evaluation do)."""
    import logging

    class CurrentStderr(logging.StreamHandler):
        """Writes to whatever ``sys.stderr`` is at the time (a test's capture, a redirect)."""

        @property
        def stream(self):
            return sys.stderr

        @stream.setter
        def stream(self, _):
            pass

    logger = logging.getLogger("hpvit_d2")
    if not logger.handlers:
        handler = CurrentStderr()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def add_register_coco_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--register-coco", nargs=3, action="append", default=[], metavar=("NAME", "JSON", "IMAGE_DIR"),
        help="register a COCO-format dataset under NAME (repeatable); then use it with "
             "dataloader.train.dataset.names=NAME / dataloader.test.dataset.names=NAME")


def register_datasets(args) -> None:
    """Register the ``--register-coco`` datasets in this process (each process needs its own)."""
    from ..data.datasets import register_coco_json

    for name, json_file, image_root in getattr(args, "register_coco", []):
        register_coco_json(name, json_file, image_root)


def check_output_path(name: str, path: str, kind: str, example: str = "") -> None:
    """
    Refuse, before any work, an output ``path`` of the wrong kind: an existing file where the
    command writes a directory (``kind="directory"``), or a directory where it writes a file
    (``kind="file"``; ``example`` is a file name to suggest in it). ``name`` is the argument as
    the user wrote it (``--output``, ``DST``).

    Raises:
        ConfigError: one line naming the argument, the path and the fix.
    """
    from ..overrides import ConfigError

    if kind == "directory" and os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"{name} {path}: is a file, and the command writes a directory there: "
                          "give a directory (created if needed)")
    if kind == "file" and os.path.isdir(path):
        suggestion = f", e.g. {os.path.join(path, example)}" if example else ""
        raise ConfigError(f"{name} {path}: is a directory, and the command writes a file there: "
                          f"give a file name{suggestion}")
