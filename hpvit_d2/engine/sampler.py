"""A training sampler that can start part-way through its stream, for exact resumption."""
import itertools

from detectron2.data.samplers import TrainingSampler

__all__ = ["ResumableTrainingSampler"]


class ResumableTrainingSampler(TrainingSampler):
    """
    detectron2's infinite shuffled TrainingSampler (same seed, same stream), whose iterator skips
    the first ``start_index`` indices of this rank: a run resumed after ``k`` iterations with
    ``start_index = k * batch_per_rank`` sees the batches an uninterrupted run would have seen
    (exactly so when all images share one aspect-ratio group, as with aspect-ratio grouping the
    partial groups in flight at the interruption are not restored).
    """

    def __init__(self, size: int, seed: int, start_index: int = 0, shuffle: bool = True):
        super().__init__(size, shuffle=shuffle, seed=seed)
        self.start_index = int(start_index)

    def __iter__(self):
        yield from itertools.islice(super().__iter__(), self.start_index, None)
