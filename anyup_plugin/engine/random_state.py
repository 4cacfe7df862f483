"""Random state in checkpoints, so that a resumed run continues the uninterrupted one exactly.

MMEngine 0.10.7 checkpoints hold the weights, the optimizer, the schedulers and the seed, but
not where the random generators stand. A run resumed at iteration ``n`` re-seeds them, so its
augmentations, random crops and dropout masks after ``n`` differ from those of the run that was
never interrupted. :class:`RandomStateHook` stores, under ``checkpoint['random_state']`` (as
tensors and plain containers, so the file still loads with ``torch.load(weights_only=True)``):

- the main process's generators: Python's ``random``, NumPy's global one, torch's CPU
  generator and, once CUDA is initialised, each CUDA device's;
- every data-loader worker's generators as they stood after the last batch the run consumed
  from that worker (the augmentation draws made so far), the worker id whose seeding each
  worker started from, and which worker produces the next batch;
- the number of processes and of workers per process, and the loop position;

and puts them back on resume: the main-process generators just before training continues,
the workers' through the loader's ``worker_init_fn`` when the loop starts fresh workers after
the resume (MMEngine's ``EpochBasedTrainLoop`` at an epoch checkpoint, and
:class:`~anyup_plugin.training.ResumableIterBasedTrainLoop`). Workers report their state in the
batches they return: :func:`collate_with_random_state` wraps the training loader's collate
function and adds the state to each batch dict, and the hook takes it out again before the
model sees the batch. :func:`add_random_state_tracking` installs both in a config;
``tools/train.py`` does so for every run.

Validation during training runs between saved states of the training generators, so whatever it
draws never shifts the training stream: a run validated more or less often draws the same
augmentations.

Limits: a checkpoint written by a different number of processes or workers per process is
resumed with a warning that the random stream will differ (the data order stays the same).
With several processes, only rank 0's workers are stored (only rank 0 writes checkpoints).
Generators that a transform creates and holds itself are not seen.
"""

from __future__ import annotations

import functools
import logging
import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from mmengine.dist import get_dist_info
from mmengine.hooks import Hook
from mmengine.registry import FUNCTIONS, HOOKS
from mmengine.runner import EpochBasedTrainLoop

__all__ = [
    'STATE_KEY',
    'WORKER_STATE_KEY',
    'RandomStateHook',
    'ResumeWorkerInit',
    'add_random_state_tracking',
    'collate_with_random_state',
    'get_random_state',
    'set_random_state',
]

logger = logging.getLogger(__name__)

#: Checkpoint entry written by :class:`RandomStateHook`.
STATE_KEY = 'random_state'
#: Batch entry in which :func:`collate_with_random_state` returns a worker's generator state.
WORKER_STATE_KEY = '_anyup_worker_random_state'
_FORMAT_VERSION = 1
_HOOK_TYPE = 'RandomStateHook'
_COLLATE_TYPE = 'collate_with_random_state'


# ---------------------------------------------------------------------------- generator states
def get_random_state(cuda: bool = True) -> dict[str, Any]:
    """The state of Python's, NumPy's and torch's global generators, as tensors and scalars.

    Args:
        cuda: Include every CUDA device's generator (only if CUDA is already initialised:
            reading a state never initialises CUDA).

    Returns:
        ``{'python': {...}, 'numpy': {...}, 'torch': (5056,) uint8, 'cuda': [uint8, ...]}``.
    """
    version, internal, gauss_next = random.getstate()
    _, key, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    cuda_states = []
    if cuda and torch.cuda.is_available() and torch.cuda.is_initialized():
        cuda_states = [s.clone() for s in torch.cuda.get_rng_state_all()]
    return {
        'python': {
            'version': int(version),
            'state': torch.tensor(internal, dtype=torch.int64),
            'gauss_next': gauss_next,
        },
        'numpy': {
            # MT19937's 624 words are uint32; int64 holds them exactly.
            'key': torch.from_numpy(key.astype(np.int64)),
            'pos': int(pos),
            'has_gauss': int(has_gauss),
            'cached_gaussian': float(cached_gaussian),
        },
        'torch': torch.get_rng_state(),
        'cuda': cuda_states,
    }


def set_random_state(state: dict[str, Any]) -> None:
    """Restores a state from :func:`get_random_state` (tensors may be on any device).

    CUDA states are restored when the number of devices matches; otherwise a warning says that
    the CUDA stream differs.
    """
    py = state['python']
    random.setstate((py['version'], tuple(int(v) for v in py['state'].tolist()), py['gauss_next']))
    np_state = state['numpy']
    key = np_state['key'].cpu().numpy().astype(np.uint32)
    np.random.set_state(
        ('MT19937', key, np_state['pos'], np_state['has_gauss'], np_state['cached_gaussian'])
    )
    torch.set_rng_state(state['torch'].cpu())
    cuda_states = state.get('cuda') or []
    if cuda_states:
        if torch.cuda.is_available() and torch.cuda.device_count() == len(cuda_states):
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])
        else:
            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            logger.warning(
                'the checkpoint holds the random state of %d CUDA device(s), this machine has '
                '%d: the CUDA random stream after the resume differs from the interrupted run',
                len(cuda_states),
                count,
            )


# ---------------------------------------------------------------------------- worker side
@functools.cache
def _registered_collate(name: str) -> Callable[..., Any]:
    return FUNCTIONS.get(name)


def _inner_collate(collate_fn: Any) -> Callable[[Sequence[Any]], Any]:
    if collate_fn is None:
        return _registered_collate('pseudo_collate')
    if callable(collate_fn):
        return collate_fn
    kwargs = dict(collate_fn)
    kind = kwargs.pop('type')
    function = _registered_collate(kind) if isinstance(kind, str) else kind
    if function is None:
        raise KeyError(f'collate function {kind!r} is not registered in MMEngine FUNCTIONS')
    return functools.partial(function, **kwargs) if kwargs else function


@FUNCTIONS.register_module()
def collate_with_random_state(data_batch: Sequence[Any], collate_fn: Any = None) -> Any:
    """Collates with ``collate_fn`` and, in a loader worker, adds the worker's random state.

    The state (after this batch's draws) goes into the batch dict under
    :data:`WORKER_STATE_KEY` as ``{'worker': id, 'state': get_random_state(cuda=False)}``;
    :class:`RandomStateHook` removes it before the model sees the batch. In the main process
    (``num_workers=0``) and for batches that are not dicts, the batch is returned unchanged.

    Args:
        data_batch: The samples of one batch.
        collate_fn: The collate function to wrap: a registered name's config (e.g.
            ``dict(type='pseudo_collate')``) or a callable; default ``pseudo_collate``.

    Returns:
        The collated batch.
    """
    batch = _inner_collate(collate_fn)(data_batch)
    info = torch.utils.data.get_worker_info()
    if info is not None and isinstance(batch, dict):
        batch[WORKER_STATE_KEY] = {'worker': int(info.id), 'state': get_random_state(cuda=False)}
    return batch


class ResumeWorkerInit:
    """A ``worker_init_fn`` that starts each new worker where an interrupted run's worker stood.

    Worker ``j`` first runs ``init_fn(seed_ids[j])`` (the seeding of the worker it replaces,
    e.g. MMEngine's ``default_worker_init_fn``), then restores ``states[j]`` if it is not None
    (None: that worker had not produced a consumed batch yet, so its seeding is its state).

    Args:
        init_fn: The loader's original ``worker_init_fn`` (may be None).
        seed_ids: Per new worker, the worker id whose seeding it starts from.
        states: Per new worker, a :func:`get_random_state` state or None.
    """

    def __init__(
        self,
        init_fn: Callable[[int], None] | None,
        seed_ids: Sequence[int],
        states: Sequence[dict[str, Any] | None],
    ) -> None:
        self.init_fn = init_fn
        self.seed_ids = [int(i) for i in seed_ids]
        self.states = list(states)

    def __call__(self, worker_id: int) -> None:
        if self.init_fn is not None:
            self.init_fn(self.seed_ids[worker_id])
        state = self.states[worker_id]
        if state is not None:
            set_random_state(state)


# ---------------------------------------------------------------------------- the hook
@HOOKS.register_module()
class RandomStateHook(Hook):
    """Stores the random state in checkpoints and restores it on resume (see the module doc).

    Registered in MMEngine's root ``HOOKS`` (usable from every scope); ``tools/train.py`` adds
    it, with :func:`collate_with_random_state` on the training loader, to every run. Priority
    ``'LOW'``: it runs before ``CheckpointHook`` (``'VERY_LOW'``), so epoch ends and restored
    validation states are in place when a checkpoint is written, and before
    :class:`~anyup_plugin.engine.WeightsOnlyCheckpointHook`.

    A loop that starts new data-loader workers after the ``before_train`` hooks on resume says
    so with a true ``restarts_workers_on_resume`` attribute; MMEngine's
    ``EpochBasedTrainLoop`` does so at every epoch start.
    """

    priority = 'LOW'

    def __init__(self) -> None:
        self._states: list[dict[str, Any] | None] = []
        self._seed_ids: list[int] = []
        self._next_worker = 0
        self._at_epoch_end = False
        self._pending: dict[str, Any] | None = None
        self._val_state: dict[str, Any] | None = None
        self._installed: tuple[Any, Any] | None = None
        self._main_state: dict[str, Any] | None = None

    # -------------------------------------------------------------- tracking
    def _reset_workers(self, num_workers: int) -> None:
        self._states = [None] * num_workers
        self._seed_ids = list(range(num_workers))
        self._next_worker = 0

    def before_train_iter(
        self, runner: Any, batch_idx: int, data_batch: Any = None, **kwargs: Any
    ) -> None:
        """Takes the worker's state out of the batch; undoes the resume ``worker_init_fn``."""
        self._at_epoch_end = False
        if self._main_state is not None:
            set_random_state(self._main_state)
            self._main_state = None
        if self._installed is not None:
            # The resumed workers have started; later worker starts (a new epoch of a
            # non-persistent loader) seed themselves as in the uninterrupted run.
            loader, init_fn = self._installed
            loader.worker_init_fn = init_fn
            self._installed = None
        if not isinstance(data_batch, dict) or WORKER_STATE_KEY not in data_batch:
            return
        report = data_batch.pop(WORKER_STATE_KEY)
        worker = int(report['worker'])
        if worker < len(self._states):
            self._states[worker] = report['state']
            self._next_worker = (worker + 1) % len(self._states)

    def after_train_epoch(self, runner: Any) -> None:
        """Marks an epoch end: the next epoch's batches start at worker 0 (new workers unless
        the loader keeps them)."""
        self._at_epoch_end = True
        self._next_worker = 0
        loader = _train_loader(runner)
        if loader is not None and not loader.persistent_workers:
            self._reset_workers(loader.num_workers)

    def before_val_epoch(self, runner: Any) -> None:
        """Saves the training generators, so validation cannot shift them."""
        self._val_state = get_random_state()

    def after_val_epoch(self, runner: Any, metrics: Any = None) -> None:
        """Puts the training generators back as they were before validation."""
        if self._val_state is not None:
            set_random_state(self._val_state)
            self._val_state = None

    # -------------------------------------------------------------- checkpoints
    def before_save_checkpoint(self, runner: Any, checkpoint: dict) -> None:
        """Adds ``checkpoint['random_state']``."""
        loader = _train_loader(runner)
        _, world_size = get_dist_info()
        meta = checkpoint.get('meta', {})
        sampler = getattr(loader, 'sampler', None)
        checkpoint[STATE_KEY] = {
            'version': _FORMAT_VERSION,
            'world_size': int(world_size),
            'num_workers': int(loader.num_workers) if loader is not None else 0,
            'epoch': int(meta.get('epoch', runner.epoch)),
            'iter': int(meta.get('iter', runner.iter)),
            'at_epoch_end': bool(self._at_epoch_end),
            'main': get_random_state(),
            'workers': {
                'states': list(self._states),
                'seed_ids': list(self._seed_ids),
                'next': int(self._next_worker),
            },
            'sampler': {
                'type': type(sampler).__name__,
                'seed': _plain_int(getattr(sampler, 'seed', None)),
            },
        }

    def after_load_checkpoint(self, runner: Any, checkpoint: dict) -> None:
        """Keeps the stored state until training starts (the runner still re-seeds after
        loading a checkpoint, and a checkpoint loaded without resuming is not restored)."""
        self._pending = checkpoint.get(STATE_KEY)

    def before_train(self, runner: Any) -> None:
        """Starts the table of worker states; on resume restores the main-process generators
        and prepares the new workers."""
        loader = _train_loader(runner)
        self._reset_workers(loader.num_workers if loader is not None else 0)
        pending, self._pending = self._pending, None
        if pending is None or runner.iter == 0 or runner.iter != pending['iter']:
            return  # a fresh run, or weights loaded without resuming
        if pending.get('version') != _FORMAT_VERSION:
            runner.logger.warning(
                'unknown random_state format %r in the checkpoint: the random stream after the '
                'resume differs from the interrupted run',
                pending.get('version'),
            )
            return
        num_workers = loader.num_workers if loader is not None else 0
        if (
            isinstance(runner.train_loop, EpochBasedTrainLoop)
            and num_workers > 0
            and loader.persistent_workers
        ):
            # The first epoch after the resume starts the persistent workers, which draws a
            # seed from torch's generator: a draw the interrupted run made before its
            # checkpoint. Nothing else draws before the first batch, so restore there.
            self._main_state = pending['main']
        else:
            set_random_state(pending['main'])
        _, world_size = get_dist_info()
        if (pending['num_workers'], pending['world_size']) != (num_workers, world_size):
            runner.logger.warning(
                'the checkpoint was written by %d process(es) with %d data-loader worker(s) '
                'each; this run has %d process(es) with %d: the random stream after the resume '
                '(augmentations, random crops) differs from an uninterrupted run (the data '
                'order does not)',
                pending['world_size'],
                pending['num_workers'],
                world_size,
                num_workers,
            )
            return
        if world_size > 1:
            runner.logger.warning(
                "with %d processes only rank 0 stores its data-loader workers' random state: "
                'the augmentations of the other ranks after the resume differ from an '
                'uninterrupted run',
                world_size,
            )
        if num_workers > 0:
            self._resume_workers(runner, loader, pending)

    def _resume_workers(self, runner: Any, loader: Any, pending: dict[str, Any]) -> None:
        workers = pending['workers']
        loop = runner.train_loop
        epoch_loop = isinstance(loop, EpochBasedTrainLoop)
        if epoch_loop and not pending['at_epoch_end']:
            runner.logger.warning(
                "resuming from a mid-epoch checkpoint: MMEngine's EpochBasedTrainLoop restarts "
                'epoch %d from its first batch, so this run differs from an uninterrupted one; '
                'resume from an epoch checkpoint for an exact continuation',
                runner.epoch,
            )
            return
        if not (epoch_loop or getattr(loop, 'restarts_workers_on_resume', False)):
            return  # the loop keeps the workers it started before the resume
        if epoch_loop and not loader.persistent_workers:
            return  # every epoch starts new workers seeded as in the uninterrupted run
        if loader.persistent_workers and not epoch_loop:
            runner.logger.warning(
                'the training loader keeps persistent workers, started before the resume: their '
                'random state cannot be restored. Set persistent_workers=False (an infinite '
                'sampler never restarts its workers anyway) for an exact resume'
            )
            return
        n = len(workers['states'])
        first = int(workers['next'])
        # New worker j produces the batches old worker (first + j) % n would have produced.
        order = [(first + j) % n for j in range(n)]
        self._states = [workers['states'][i] for i in order]
        self._seed_ids = [int(workers['seed_ids'][i]) for i in order]
        self._next_worker = 0
        self._installed = (loader, loader.worker_init_fn)
        loader.worker_init_fn = ResumeWorkerInit(
            loader.worker_init_fn, self._seed_ids, self._states
        )


def _train_loader(runner: Any) -> Any:
    """The training data loader if the runner has one (built), else None."""
    loop = getattr(runner, 'train_loop', None)
    loader = getattr(loop, 'dataloader', None)
    return loader if isinstance(loader, torch.utils.data.DataLoader) else None


def _plain_int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, np.integer)) else None


def add_random_state_tracking(cfg: Any) -> None:
    """Adds :class:`RandomStateHook` to ``cfg.custom_hooks`` and wraps the training loader's
    collate function in :func:`collate_with_random_state` (both once).

    Also adds ``anyup_plugin.engine`` to ``custom_imports``, so that the config the runner
    dumps into its work directory builds on its own.
    """
    hooks = list(cfg.get('custom_hooks', None) or [])
    if not any(_type_name(h) == _HOOK_TYPE for h in hooks):
        hooks.append(dict(type=_HOOK_TYPE))
        cfg.custom_hooks = hooks
    loader = cfg.get('train_dataloader', None)
    if isinstance(loader, dict):
        collate = loader.get('collate_fn', None) or dict(type='pseudo_collate')
        if not (isinstance(collate, dict) and collate.get('type') == _COLLATE_TYPE):
            loader['collate_fn'] = dict(type=_COLLATE_TYPE, collate_fn=collate)
    imports = cfg.get('custom_imports', None)
    if imports is None:
        cfg.custom_imports = dict(imports=['anyup_plugin.engine'], allow_failed_imports=False)
    elif 'anyup_plugin.engine' not in imports.get('imports', []):
        names = imports.get('imports', [])
        names = [names] if isinstance(names, str) else list(names)
        imports['imports'] = [*names, 'anyup_plugin.engine']


def _type_name(hook: Any) -> str:
    kind = hook.get('type') if isinstance(hook, dict) else type(hook).__name__
    name = kind if isinstance(kind, str) else getattr(kind, '__name__', '')
    return name.split('.')[-1]
