"""
What a resumed run's optimizer state must be: the optimizer's own structure (parameter groups,
parameters per group, each state tensor the shape of its parameter) and finite values. Checked
before anything is loaded (``HPViTCheckpointer`` on ``--resume``), and the finiteness also before
anything is saved: torch's own check comes after the model is loaded, and a NaN moment resumed
makes every later run diverge.
"""
from typing import Dict, Iterator, List, Optional, Tuple

import torch

__all__ = ["non_finite_optimizer_state", "optimizer_state_problem"]


def _parameter_names(optimizer: torch.optim.Optimizer,
                     model: Optional[torch.nn.Module]) -> Dict[int, str]:
    """``{id(parameter): name in model}`` (empty without a model)."""
    if model is None:
        return {}
    return {id(p): name for name, p in model.named_parameters()}


def _pairs(optimizer, state: Dict) -> Iterator[Tuple[torch.Tensor, Dict]]:
    """(parameter, its saved state) in the order of the groups, as torch pairs them on loading."""
    for group, saved in zip(optimizer.param_groups, state.get("param_groups", [])):
        for parameter, index in zip(group["params"], saved["params"]):
            yield parameter, state.get("state", {}).get(index, {})


def optimizer_state_problem(optimizer: torch.optim.Optimizer, state: Dict,
                            model: Optional[torch.nn.Module] = None) -> Optional[str]:
    """What makes ``state`` (an ``optimizer.state_dict()``) not ``optimizer``'s, or None;
    parameters are named after ``model``'s."""
    groups, saved = optimizer.param_groups, state.get("param_groups", [])
    if len(groups) != len(saved):
        return f"the optimizer has {len(groups)} parameter groups, the checkpoint's {len(saved)}"
    for k, (group, saved_group) in enumerate(zip(groups, saved)):
        if len(group["params"]) != len(saved_group["params"]):
            return (f"parameter group {k} has {len(group['params'])} parameters, the "
                    f"checkpoint's {len(saved_group['params'])}")
    names = _parameter_names(optimizer, model)
    for parameter, entries in _pairs(optimizer, state):
        for key, value in entries.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 \
                    and value.shape != parameter.shape:
                name = names.get(id(parameter), f"a parameter of shape {tuple(parameter.shape)}")
                return (f"the checkpoint's {key} of {name} is {tuple(value.shape)}, the "
                        f"parameter {tuple(parameter.shape)}")
    return None


def non_finite_optimizer_state(optimizer: torch.optim.Optimizer, state: Optional[Dict] = None,
                               model: Optional[torch.nn.Module] = None) -> List[str]:
    """``"<state> of <parameter>"`` for every floating-point optimizer state tensor holding a NaN
    or an Inf: of ``state`` (a saved ``state_dict()``, paired with ``optimizer``'s parameters),
    or of the optimizer's live state."""
    names = _parameter_names(optimizer, model)
    if state is None:
        pairs = ((p, optimizer.state.get(p, {})) for group in optimizer.param_groups
                 for p in group["params"])
    else:
        pairs = _pairs(optimizer, state)
    bad = []
    for parameter, entries in pairs:
        for key, value in entries.items():
            if isinstance(value, torch.Tensor) and value.is_floating_point() \
                    and not bool(torch.isfinite(value).all()):
                bad.append(f"{key} of {names.get(id(parameter), 'a parameter')}")
    return bad
