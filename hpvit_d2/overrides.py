"""
Command-line overrides of a LazyConfig, checked before any work: ``KEY=VALUE`` must name a key
that exists (or an argument that the LazyCall target at that place accepts, at any depth: for a
function that passes ``**kwargs`` on, such as detectron2's train loader to torch's ``DataLoader``,
an argument its callees take); ``+KEY=VALUE`` adds a new key on purpose. A misspelt key is a :class:`ConfigError` naming the closest existing one. A
value that replaces a number or a boolean must be one too (an integer may replace a float), so
``train.max_iter=abc`` fails here, not deep in the trainer.
"""
import ast
import builtins
import difflib
import inspect
import textwrap
from typing import List, Optional, Sequence, Set

from detectron2.config import LazyConfig
from detectron2.utils.registry import locate
from omegaconf import DictConfig, ListConfig

__all__ = ["ConfigError", "apply_overrides", "check_override_key", "check_override_type"]


class ConfigError(ValueError):
    """A config, key, override or device that is wrong; the message names it and the fix."""


def _accepted_arguments(target, _seen: tuple = ()) -> Optional[Set[str]]:
    """Keyword arguments ``target`` accepts; for a class whose ``__init__`` forwards ``**kwargs``,
    those of its parents too; for a function that passes its ``**kwargs`` on, those its callees
    take (:func:`_passed_on`). None when it accepts anything."""
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
        var_keyword = next((p.name for p in params if p.kind == p.VAR_KEYWORD), None)
        if var_keyword is None:
            return names - {"self"}
        if not inspect.isclass(target):
            passed = _passed_on(function, var_keyword, _seen)
            return None if passed is None else names | passed
    return None


def _resolve(node: ast.expr, namespace: dict):
    """The object an ``ast.Name`` or ``ast.Attribute`` chain names in ``namespace``, or None."""
    if isinstance(node, ast.Name):
        return namespace.get(node.id, getattr(builtins, node.id, None))
    if isinstance(node, ast.Attribute):
        owner = _resolve(node.value, namespace)
        return getattr(owner, node.attr, None) if owner is not None else None
    return None


def _passed_on(function, var_keyword: str, seen: tuple) -> Optional[Set[str]]:
    """
    The keyword arguments that ``function``'s ``**var_keyword`` can carry: read from its source,
    every call that passes ``**var_keyword`` on (detectron2's ``build_detection_train_loader`` ->
    ``build_batch_data_loader`` -> ``torch.utils.data.DataLoader``), the arguments its callee
    takes that the call does not set itself, common to all such calls. None when that cannot be
    told (no source, a callee that cannot be resolved or takes anything, or no such call).
    """
    function = inspect.unwrap(function)
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    except (OSError, TypeError, SyntaxError):
        return None
    accepted = None
    for call in ast.walk(tree):
        if not (isinstance(call, ast.Call) and any(
                k.arg is None and isinstance(k.value, ast.Name) and k.value.id == var_keyword
                for k in call.keywords)):
            continue
        callee = _resolve(call.func, function.__globals__)
        if callee is None or callee in seen or not callable(callee):
            return None
        takes = _accepted_arguments(callee, seen + (function,))
        if takes is None:
            return None
        try:
            params = list(inspect.signature(callee).parameters.values())
        except (TypeError, ValueError):
            return None
        positional = {p.name for p in params[:len(call.args)]}
        takes = takes - positional - {k.arg for k in call.keywords if k.arg}
        accepted = takes if accepted is None else accepted & takes
    return accepted


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
