"""
Which checkpoints belong to a training run: its identity, recorded in every checkpoint it saves.

A run started from scratch draws a new identity; a resumed run takes over the identity of the
checkpoint it resumed from (its ``run`` entry, loaded like every checkpointable), so the files of
one run, over any number of stops and resumes, share it. Files of another run in the same
directory (an earlier run's, or copied there) do not, and :func:`checkpoints_of` leaves them out:
a run's divergence handling never adopts or condemns another run's checkpoints.
"""
import os
import re
import uuid
from typing import Dict, Optional

__all__ = ["RunIdentity", "checkpoints_of"]

_PERIODIC = re.compile(r"model_(\d{7})\.pth")


class RunIdentity:
    """A checkpointable (``HPViTCheckpointer(..., run=RunIdentity())``): ``{"id": ...}`` in every
    checkpoint saved, taken over from the checkpoint a run resumes from (``resumed_from``)."""

    def __init__(self):
        self.id = uuid.uuid4().hex[:16]
        self.resumed_from: Optional[str] = None

    def state_dict(self) -> Dict[str, str]:
        return {"id": self.id}

    def load_state_dict(self, state: Dict[str, str]) -> None:
        self.id = str(state["id"])

    def owns(self, path: str) -> bool:
        """True for a checkpoint file this run saved (its recorded identity) or resumed from."""
        from ..checkpoint.io import checkpoint_fields

        if self.resumed_from and os.path.abspath(path) == os.path.abspath(self.resumed_from):
            return True
        recorded = checkpoint_fields(path, ("run",)).get("run")
        return isinstance(recorded, dict) and recorded.get("id") == self.id


def checkpoints_of(run: RunIdentity, paths) -> Dict[int, str]:
    """``{iteration: file name}`` of the periodic checkpoints ``model_{iter:07d}.pth`` among
    ``paths`` that ``run`` owns."""
    found = {}
    for path in paths:
        match = _PERIODIC.fullmatch(os.path.basename(path))
        if match and run.owns(path):
            found[int(match[1])] = os.path.basename(path)
    return found
