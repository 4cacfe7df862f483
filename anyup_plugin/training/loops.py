"""Fast, exact resumption of iteration-based training.

MMEngine's ``IterBasedTrainLoop`` resumes at iteration ``n`` by drawing (loading, decoding and
augmenting) ``n`` batches and throwing them away, which takes long at ``n = 90000``.
:class:`ResumableIterBasedTrainLoop` instead tells a :class:`ResumableInfiniteSampler` to
start ``n`` batches into its index stream, so the resumed run sees the images the
uninterrupted run would have seen, without loading the skipped ones.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from typing import Any

import torch
from mmengine.dist import get_dist_info, sync_random_seed
from mmengine.logging import print_log
from mmengine.runner import IterBasedTrainLoop
from torch.utils.data import Sampler

from .registry import DATA_SAMPLERS, LOOPS

__all__ = ['ResumableInfiniteSampler', 'ResumableIterBasedTrainLoop']


@DATA_SAMPLERS.register_module()
class ResumableInfiniteSampler(Sampler):
    """An endless stream of dataset indices that can start at any position.

    The global stream is the concatenation of permutations of ``range(len(dataset))`` drawn
    from a generator seeded with ``seed`` (or ``range`` repeated, without shuffling); process
    ``rank`` of ``world_size`` takes every ``world_size``-th index starting at ``rank``.
    :meth:`set_start` skips the first ``n`` indices of this process's share.

    Args:
        dataset: The dataset (only its length is used).
        shuffle: Shuffle each pass over the data.
        seed: Shuffling seed, the same on every process; default a seed shared by all
            processes (MMEngine's runner passes its own seed).
    """

    def __init__(self, dataset: Any, shuffle: bool = True, seed: int | None = None) -> None:
        rank, world_size = get_dist_info()
        self.rank = rank
        self.world_size = world_size
        self.dataset = dataset
        self.size = len(dataset)
        self.shuffle = shuffle
        self.seed = sync_random_seed() if seed is None else int(seed)
        self.start = 0

    def _global_stream(self) -> Iterator[int]:
        gen = torch.Generator()
        gen.manual_seed(self.seed)
        while True:
            if self.shuffle:
                yield from torch.randperm(self.size, generator=gen).tolist()
            else:
                yield from range(self.size)

    def __iter__(self) -> Iterator[int]:
        share = itertools.islice(self._global_stream(), self.rank, None, self.world_size)
        return itertools.islice(share, self.start, None)

    def __len__(self) -> int:
        return self.size

    def set_epoch(self, epoch: int) -> None:
        """Not used: the stream does not depend on epochs."""

    def set_start(self, num_samples: int) -> None:
        """Makes the next iteration start ``num_samples`` indices into this process's share."""
        self.start = int(num_samples)


class _SkippingIterator:
    """Returns ``None`` for the first ``skip`` calls (without loading), then the batches."""

    def __init__(self, dataloader: Any, skip: int) -> None:
        self._dataloader = dataloader
        self._iterator = iter(dataloader)
        self._skip = skip
        self._epoch = 0

    def __iter__(self) -> _SkippingIterator:
        return self

    def __next__(self) -> Any:
        if self._skip > 0:
            self._skip -= 1
            return None
        try:
            return next(self._iterator)
        except StopIteration:
            self._epoch += 1
            sampler = getattr(self._dataloader, 'sampler', None)
            if hasattr(sampler, 'set_epoch'):
                sampler.set_epoch(self._epoch)
            self._iterator = iter(self._dataloader)
            return next(self._iterator)


@LOOPS.register_module()
class ResumableIterBasedTrainLoop(IterBasedTrainLoop):
    """``IterBasedTrainLoop`` that resumes without re-loading the skipped batches.

    Takes MMEngine's ``IterBasedTrainLoop`` arguments. With a :class:`ResumableInfiniteSampler`
    it resumes by moving the sampler; with any other sampler it behaves like its parent.
    """

    def run(self) -> Any:
        """Positions the sampler after a resume, then runs the parent loop."""
        sampler = getattr(self.dataloader, 'sampler', None)
        if self._iter > 0 and isinstance(sampler, ResumableInfiniteSampler):
            # The runner re-seeds from the checkpoint on resume; the sampler was built before
            # that with the new run's seed: use the original run's.
            sampler.seed = int(self.runner.seed)
            batch_size = self.dataloader.batch_size or 1
            sampler.set_start(self._iter * batch_size)
            print_log(
                f'resuming at iteration {self._iter}: the sampler skips '
                f'{self._iter * batch_size} samples per process without loading them',
                logger='current',
                level=logging.INFO,
            )
            self.dataloader_iterator = _SkippingIterator(self.dataloader, self._iter)
        return super().run()
