"""
A training loader whose every random choice is a function of (seed, global sample position), so
that a run resumed from a checkpoint sees exactly the batches of an uninterrupted run, with any
``num_workers``.

- Order: detectron2's ``TrainingSampler`` stream (same seed, same shuffled epochs, same sharding
  over ranks). Local position ``p`` of rank ``r`` of ``W`` is global position ``p * W + r``.
- Augmentation: the mapper runs each sample with Python's, NumPy's and torch's global generators
  seeded from (seed, global position) (and restored afterwards), not from a worker's state.
  A mapper that returns None (a sample it skips) is retried on an index drawn from the same seed.
- Batching: as ``build_detection_train_loader``: consecutive samples, grouped by aspect ratio
  (width > height or not) when ``aspect_ratio_grouping``, like ``AspectRatioGroupedDataset``.
- Position: ``state_dict()`` is the next position to read and the positions waiting in partial
  aspect-ratio groups; ``load_state_dict`` before iterating restarts there (the waiting samples
  are mapped again, identically).

DataLoader workers read positions round-robin (worker ``w`` of ``K`` takes ``start + w + k*K``),
and torch returns their results in that order, so the stream order does not depend on ``K``.
"""
import contextlib
import itertools
import logging
import random
from typing import Any, Callable, ContextManager, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.data.samplers import TrainingSampler
from detectron2.utils import comm
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

__all__ = ["ResumableTrainLoader", "batch_split_problem", "seeded_random_state", "sample_seed"]

logger = logging.getLogger(__name__)

_MAX_RETRIES = 32


def sample_seed(seed: int, position: int, attempt: int = 0) -> int:
    """A 32-bit seed for the sample at global ``position`` (``attempt`` > 0: its retries)."""
    return int(np.random.SeedSequence([seed % 2**32, position, attempt]).generate_state(1)[0])


@contextlib.contextmanager
def seeded_random_state(seed: int):
    """Seed Python's ``random``, NumPy's and torch's global generators; restore them on exit."""
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


class _PositionedSamples(IterableDataset):
    """(local position, mapped sample) for this rank's positions ``start``, ``start + 1``, ..."""

    def __init__(self, dataset: Sequence, mapper: Callable, seed: int, start: int,
                 shuffle: bool = True):
        self.dataset = dataset
        self.mapper = mapper
        self.seed = seed
        self.start = start
        self.rank, self.world_size = comm.get_rank(), comm.get_world_size()
        # Built here, in the training process: TrainingSampler reads the rank when constructed,
        # and a loader worker (forked or spawned) may not see the process group.
        self.sampler = TrainingSampler(len(dataset), shuffle=shuffle, seed=seed)

    def map_position(self, position: int, index: int) -> Dict[str, Any]:
        """The mapped sample at local ``position`` (dataset ``index``), retried if skipped."""
        global_position = position * self.world_size + self.rank
        for attempt in range(_MAX_RETRIES):
            with seeded_random_state(sample_seed(self.seed, global_position, attempt)):
                sample = self.mapper(self.dataset[index])
            if sample is not None:
                return sample
            rng = np.random.default_rng([self.seed % 2**32, global_position, attempt])
            index = int(rng.integers(len(self.dataset)))
        raise RuntimeError(f"the mapper skipped {_MAX_RETRIES} samples in a row at position "
                           f"{global_position}: check the dataset (see the mapper's counts)")

    def indices(self, start: int) -> Iterator[int]:
        """Dataset indices of this rank's stream from local position ``start`` on."""
        return itertools.islice(iter(self.sampler), start, None)

    def __iter__(self) -> Iterator[Tuple[int, Dict[str, Any]]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        stream = itertools.islice(self.indices(self.start), worker, None, workers)
        for k, index in enumerate(stream):
            position = self.start + worker + k * workers
            yield position, self.map_position(position, index)


def batch_split_problem(total_batch_size, processes: int, how: str = "") -> Optional[str]:
    """What is wrong with ``dataloader.train.total_batch_size`` for ``processes`` training
    processes (each takes ``total_batch_size / processes`` images an iteration), or None;
    ``how`` says where the process count comes from (e.g. `` (--num-gpus 3 x ...)``)."""
    key = f"dataloader.train.total_batch_size={total_batch_size}"
    if isinstance(total_batch_size, bool) or not isinstance(total_batch_size, int) \
            or total_batch_size < 1:
        return f"{key}: must be a whole number >= 1 (images per iteration, all processes)"
    if total_batch_size % processes:
        multiple = -(-total_batch_size // processes) * processes
        return (f"{key} does not split over the {processes} training processes{how}: use a multiple "
                f"of {processes}, e.g. dataloader.train.total_batch_size={multiple}")
    return None


class ResumableTrainLoader:
    """
    Infinite iterable of training batches (lists of mapped dataset dicts), with a checkpointable
    position. Arguments follow ``detectron2.data.build_detection_train_loader``.
    """

    def __init__(
        self,
        dataset: Sequence,
        *,
        mapper: Callable,
        total_batch_size: int,
        seed: int,
        aspect_ratio_grouping: bool = True,
        num_workers: int = 0,
        shuffle: bool = True,
        prefetch_factor: Optional[int] = None,
        pin_memory: bool = False,
        worker_init_fn: Optional[Callable[[int], None]] = None,
        starting_workers: Callable[[], ContextManager] = contextlib.nullcontext,
    ):
        """
        Args:
            dataset (list or Dataset): dataset dicts, indexable.
            mapper (callable): dataset dict -> model input dict (or None to skip it).
            total_batch_size (int): batch size summed over ranks (divisible by the world size).
            seed (int): the seed of sampling and augmentation.
            aspect_ratio_grouping (bool): batch images of the same orientation together.
            num_workers (int): DataLoader worker processes.
            shuffle (bool): shuffle each epoch (as TrainingSampler).
            prefetch_factor, pin_memory, worker_init_fn: passed to torch's DataLoader.
            starting_workers: a context the worker processes are started in (the engine's
                ``stop_signals_blocked``, with its ``ignore_stop_signals`` as worker_init_fn).
        """
        world_size = comm.get_world_size()
        problem = batch_split_problem(total_batch_size, world_size)
        if problem:
            raise ValueError(problem)
        self.dataset = dataset
        self.mapper = mapper
        self.batch_size = total_batch_size // world_size
        self.seed = int(seed)
        self.aspect_ratio_grouping = aspect_ratio_grouping
        self.num_workers = num_workers
        self.shuffle = shuffle
        self.prefetch_factor = prefetch_factor
        self.pin_memory = pin_memory
        self.worker_init_fn = worker_init_fn
        self.starting_workers = starting_workers
        self.world_size = world_size
        self._next_position = 0
        self._waiting: List[List[int]] = [[], []]
        self._iterating = False

    def state_dict(self) -> Dict[str, Any]:
        return {"seed": self.seed, "world_size": self.world_size, "batch_size": self.batch_size,
                "next_position": self._next_position,
                "waiting": [list(group) for group in self._waiting]}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        if self._iterating:
            raise RuntimeError("ResumableTrainLoader.load_state_dict must come before iteration")
        if state["world_size"] != self.world_size or state["batch_size"] != self.batch_size:
            logger.warning(
                f"The checkpoint's data position is for {state['world_size']} processes of batch "
                f"{state['batch_size']}; this run has {self.world_size} of {self.batch_size}: the "
                "data stream restarts at the matching sample count, not exactly")
            seen = state["next_position"] * state["world_size"]
            self._next_position = seen // self.world_size
            self._waiting = [[], []]
        else:
            self._next_position = int(state["next_position"])
            self._waiting = [list(group) for group in state["waiting"]]
        self.seed = int(state["seed"])

    def _group(self, sample: Dict[str, Any]) -> int:
        if not self.aspect_ratio_grouping:
            return 0
        return 0 if sample["width"] > sample["height"] else 1

    def __iter__(self) -> Iterator[List[Dict[str, Any]]]:
        self._iterating = True
        samples = _PositionedSamples(self.dataset, self.mapper, self.seed, self._next_position,
                                     shuffle=self.shuffle)
        # Samples read before the checkpoint but not yet batched: mapped again, identically.
        waiting = [[], []]
        if any(self._waiting):
            replay = sorted(p for group in self._waiting for p in group)
            start = replay[0]
            for position, index in zip(itertools.count(start), samples.indices(start)):
                if position > replay[-1]:
                    break
                if position in replay:
                    sample = samples.map_position(position, index)
                    waiting[self._group(sample)].append((position, sample))
        loader = DataLoader(
            samples,
            batch_size=None,
            num_workers=self.num_workers,
            generator=torch.Generator().manual_seed(self.seed),  # the global RNG is not touched
            prefetch_factor=self.prefetch_factor if self.num_workers else None,
            pin_memory=self.pin_memory,
            worker_init_fn=self.worker_init_fn,
            persistent_workers=False,
        )
        with self.starting_workers():
            batches = iter(loader)
        try:
            for position, sample in batches:
                self._next_position = position + 1
                group = waiting[self._group(sample)]
                group.append((position, sample))
                if len(group) == self.batch_size:
                    batch = [s for _, s in group]
                    group.clear()
                    self._waiting = [[p for p, _ in g] for g in waiting]
                    yield batch
                else:
                    self._waiting = [[p for p, _ in g] for g in waiting]
        finally:
            # However the loop ends (closed, a worker's error, a signal), its workers are joined
            # here: they may ignore SIGTERM (ignore_stop_signals), and an error's traceback keeps
            # this frame, so the iterator's own finaliser would run only at exit, after
            # multiprocessing has waited for them forever.
            shutdown = getattr(batches, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()
