"""
Command-line overrides of a LazyConfig, checked before any work: ``KEY=VALUE`` must name a key
that exists (or an argument that the LazyCall target at that place accepts); ``+KEY=VALUE`` adds a
new key on purpose. A misspelt key is a :class:`ConfigError` naming the closest existing one. A
value that replaces a number or a boolean must be one too (an integer may replace a float), so
``train.max_iter=abc`` fails here, not deep in the trainer.
"""
import difflib
import inspect
from typing import Iterable, List, Sequence

from detectron2.config import LazyConfig
from detectron2.utils.registry import locate
from omegaconf import DictConfig, ListConfig

__all__ = ["ConfigError", "apply_overrides", "check_override_key", "check_override_type"]


class ConfigError(ValueError):
    """A config, key, override or device that is wrong; the message names it and the fix."""


def _accepted_arguments(target) -> Iterable[str]:
    """Keyword arguments ``target`` accepts; for a class whose ``__init__`` forwards ``**kwargs``,
    those of its parents too. None when it accepts anything."""
    if isinstance(target, str):
        target = locate(target)
    functions = [c.__init__ for c in inspect.getmro(target) if "__init__" in vars(c)] \
        if inspect.isclass(target) else [target]
    names = set()
    for function in functions:
        try:
            params = inspect.signature(function).parameters.values()
        except (TypeError, ValueError):
            return None
        names |= {p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            return names - {"self"}
    return None


def _target_name(target) -> str:
    return target if isinstance(target, str) else f"{target.__module__}.{target.__qualname__}"


def _exists(cfg, dotted: str) -> bool:
    try:
        check_override_key(cfg, dotted)
        return True
    except ConfigError:
        return False


def check_override_key(cfg, dotted: str) -> None:
    """
    Raise ConfigError unless ``dotted`` (``a.b.c``) exists in ``cfg`` or is an argument of the
    LazyCall target that would receive it.
    """
    parts = dotted.split(".")
    node = cfg
    for i, part in enumerate(parts):
        if isinstance(node, DictConfig) and part in node:
            node = node[part]
            continue
        if isinstance(node, ListConfig) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
            continue
        where = ".".join(parts[:i]) or "<top level>"
        if not isinstance(node, (DictConfig, ListConfig)):
            raise ConfigError(f"{dotted}: {where} is a value ({node!r}), not a group of keys")
        if isinstance(node, DictConfig) and "_target_" in node and i == len(parts) - 1:
            accepted = _accepted_arguments(node["_target_"])
            if accepted is None or part in accepted:
                return
            candidates: List[str] = sorted(accepted)
            kind = f"{_target_name(node['_target_'])} takes no argument {part!r}"
        else:
            candidates = [str(k) for k in (node.keys() if isinstance(node, DictConfig)
                                           else range(len(node)))]
            kind = "no such key"
        close = difflib.get_close_matches(part, candidates, n=1, cutoff=0.5)
        if close:
            guess = ".".join(parts[:i] + [close[0]] + parts[i + 1:])
            if i + 1 < len(parts) and not _exists(cfg, guess):
                guess = ".".join(parts[:i] + [close[0]])
            hint = f"did you mean {guess}?"
        else:
            hint = f"keys under {where}: {', '.join(candidates[:12])}"
        raise ConfigError(f"{dotted}: {kind}; {hint} (+{dotted}=VALUE adds a new key on purpose)")


_MISSING = object()


def _value_at(cfg, dotted: str):
    """The value at ``a.b.c`` in ``cfg``, or ``_MISSING``."""
    node = cfg
    for part in dotted.split("."):
        if isinstance(node, DictConfig) and part in node:
            node = node[part]
        elif isinstance(node, ListConfig) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def check_override_type(item: str, old, new) -> None:
    """
    Raise ConfigError when the override ``item`` gives ``new`` where the config has the number or
    boolean ``old`` and ``new`` is not of its kind (an int may replace a float); other values
    (strings, None, lists, LazyCalls) are not checked.
    """
    if isinstance(old, bool):
        kind, fits = "true or false", isinstance(new, bool)
    elif isinstance(old, int):
        kind, fits = "an integer", isinstance(new, int) and not isinstance(new, bool)
    elif isinstance(old, float):
        kind, fits = "a number", isinstance(new, (int, float)) and not isinstance(new, bool)
    else:
        return
    if not fits:
        raise ConfigError(f"{item}: the value must be {kind}, like the config's {old!r} "
                          f"(got {type(new).__name__} {new!r})")


def apply_overrides(cfg, overrides: Sequence[str]):
    """
    ``LazyConfig.apply_overrides`` with every key checked first and every number or boolean
    value checked after parsing (see the module docstring).

    Raises:
        ConfigError: a malformed override, a key that does not exist (with the closest one), or
            a value of the wrong type.
    """
    plain, checked = [], {}  # key -> (its last override, the config's value)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip("+"):
            raise ConfigError(f"override {item!r}: expected KEY=VALUE (e.g. train.max_iter=100)")
        if not key.startswith("+"):
            check_override_key(cfg, key)
            checked[key] = (item, checked[key][1] if key in checked else _value_at(cfg, key))
        plain.append(f"{key.lstrip('+')}={value}")
    try:
        cfg = LazyConfig.apply_overrides(cfg, plain)
    except Exception as e:  # hydra's parser errors on malformed values
        raise ConfigError(f"overrides {list(overrides)}: {type(e).__name__}: {e}") from None
    for key, (item, old) in checked.items():
        check_override_type(item, old, _value_at(cfg, key))
    return cfg
