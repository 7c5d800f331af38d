"""detectron2's trainers, stopping on a non-finite loss with the iteration and the loss terms."""
from typing import Mapping

import torch
from detectron2.engine import AMPTrainer, SimpleTrainer
from detectron2.utils import comm

__all__ = ["FiniteSimpleTrainer", "FiniteAMPTrainer"]


class _FiniteLossCheck:
    """Checks every rank's losses before the optimizer step, so no non-finite update is applied."""

    def _write_metrics(self, loss_dict: Mapping[str, torch.Tensor], data_time: float,
                       prefix: str = "", iter=None) -> None:
        iteration = self.iter if iter is None else iter
        bad = {k: float(v.detach()) for k, v in loss_dict.items() if not torch.isfinite(v).all()}
        if comm.get_world_size() > 1:
            bad_everywhere = comm.all_gather(bad)
            bad = {f"{k} (rank {r})": v for r, b in enumerate(bad_everywhere) for k, v in b.items()}
        if bad:
            terms = ", ".join(f"{k}={v}" for k, v in bad.items())
            raise FloatingPointError(
                f"non-finite loss at iteration {iteration}: {terms}. The optimizer step was not "
                "taken and nothing was saved for this iteration; the last checkpoint in the output "
                "directory is intact (lower the learning rate or check the data, then --resume)."
            )
        super()._write_metrics(loss_dict, data_time, prefix=prefix, iter=iter)


class FiniteSimpleTrainer(_FiniteLossCheck, SimpleTrainer):
    pass


class FiniteAMPTrainer(_FiniteLossCheck, AMPTrainer):
    pass
