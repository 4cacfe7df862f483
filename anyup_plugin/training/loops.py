"""Fast, exact resumption of iteration-based training.

MMEngine's ``IterBasedTrainLoop`` resumes at iteration ``n`` by drawing (loading, decoding and
augmenting) ``n`` batches and throwing them away, which takes long at ``n = 90000``.
:class:`ResumableIterBasedTrainLoop` instead tells a :class:`ResumableInfiniteSampler` to
start ``n`` batches into its index stream, so the resumed run sees the images the
uninterrupted run would have seen, without loading the skipped ones. Together with
:class:`~anyup_plugin.engine.RandomStateHook` (which ``tools/train.py`` adds to every run) it
also draws the same augmentations and crops, so a killed and resumed run ends with the weights
of the uninterrupted one, bit for bit on CPU with the same number of loader workers.
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


@LOOPS.register_module()
class ResumableIterBasedTrainLoop(IterBasedTrainLoop):
    """``IterBasedTrainLoop`` that resumes without re-loading the skipped batches.

    Takes MMEngine's ``IterBasedTrainLoop`` arguments. With a :class:`ResumableInfiniteSampler`
    a resume at iteration ``n`` moves the sampler ``n`` batches on instead of loading and
    discarding ``n`` batches, and starts the loader's iterator (new worker processes unless the
    loader keeps persistent ones) after the ``before_train`` hooks, so that
    :class:`~anyup_plugin.engine.RandomStateHook` can restore the random state first and hand
    the new workers the state the interrupted run's workers had. With any other sampler it
    behaves like its parent.
    """

    @property
    def restarts_workers_on_resume(self) -> bool:
        """Whether a resume starts new loader workers after ``before_train`` (see the hook)."""
        return isinstance(getattr(self.dataloader, 'sampler', None), ResumableInfiniteSampler)

    def run(self) -> Any:
        """Runs the parent loop, or on resume with a resumable sampler the same loop without
        its replay of the skipped batches."""
        if self._iter == 0 or not self.restarts_workers_on_resume:
            return super().run()
        self.runner.call_hook('before_train')
        self._start_loader_at(self._iter)
        self.runner.call_hook('before_train_epoch')
        while self._iter < self._max_iters and not self.stop_training:
            self.runner.model.train()
            data_batch = next(self.dataloader_iterator)
            self.run_iter(data_batch)
            self._decide_current_val_interval()
            if (
                self.runner.val_loop is not None
                and self._iter >= self.val_begin
                and (self._iter % self.val_interval == 0 or self._iter == self._max_iters)
            ):
                self.runner.val_loop.run()
        self.runner.call_hook('after_train_epoch')
        self.runner.call_hook('after_train')
        return self.runner.model

    def _start_loader_at(self, iteration: int) -> None:
        """Positions the sampler after ``iteration`` batches and starts a new loader iterator."""
        sampler = self.dataloader.sampler
        # The runner re-seeds from the checkpoint on resume; the sampler was built before
        # that with the new run's seed: use the original run's.
        sampler.seed = int(self.runner.seed)
        skipped = iteration * (self.dataloader.batch_size or 1)
        sampler.set_start(skipped)
        print_log(
            f'resuming at iteration {iteration}: the sampler skips {skipped} samples per '
            'process without loading them',
            logger='current',
            level=logging.INFO,
        )
        # Creating an iterator draws a seed from torch's global generator, a draw the
        # interrupted run made before its checkpoint: keep the restored state where it is.
        with torch.random.fork_rng(devices=[]):
            self.dataloader_iterator = iter(self.dataloader)
