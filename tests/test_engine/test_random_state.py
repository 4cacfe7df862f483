"""Random state in checkpoints: stopped-and-resumed toy runs end bitwise where uninterrupted
ones end, with several loader workers, for iteration- and epoch-based loops.

The toy dataset draws from Python's, NumPy's and torch's generators in the loader workers (like
augmentations) and the toy model draws from torch's in the main process (like random crops), so
every generator the hook stores changes the weights.
"""

from __future__ import annotations

import random
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip('mmengine', reason='the hook is an MMEngine component')

from mmengine.model import BaseModel
from mmengine.runner import Runner

import anyup_plugin.training  # noqa: F401  (registers the resumable sampler and loop)
from anyup_plugin.engine import ResumeWorkerInit, get_random_state, set_random_state

BATCH = 2
SAMPLES = 10  # 5 batches per pass: an odd number, so passes end on alternating workers


class NoisyDataset(torch.utils.data.Dataset):
    """Sample ``i``: ``i`` plus noise from torch, NumPy and Python (the 'augmentations')."""

    def __len__(self) -> int:
        return SAMPLES

    def __getitem__(self, i: int) -> dict:
        noise = torch.rand(3) + float(np.random.rand()) + random.random()
        return {'inputs': torch.full((3,), i / SAMPLES) + noise}


class ToyModel(BaseModel):
    """A linear layer whose loss also draws from torch's main-process generator."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 1)

    def forward(self, inputs: torch.Tensor, data_samples=None, mode: str = 'loss'):
        jitter = torch.rand(inputs.shape[0], 1)
        return {'loss': (self.linear(inputs) * (1 + jitter)).pow(2).mean()}


def _runner(work_dir: Path, loop: dict, sampler: dict, persistent: bool, hook: bool, **kw):
    custom_hooks = [dict(type='WeightsOnlyCheckpointHook')]
    collate = dict(type='default_collate')
    if hook:
        custom_hooks.append(dict(type='RandomStateHook'))
        collate = dict(type='collate_with_random_state', collate_fn=collate)
    by_epoch = loop['type'] == 'EpochBasedTrainLoop'
    torch.manual_seed(0)  # the same initial weights in every run
    return Runner(
        model=ToyModel(),
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=NoisyDataset(),
            batch_size=BATCH,
            num_workers=2,
            persistent_workers=persistent,
            sampler=sampler,
            collate_fn=collate,
        ),
        train_cfg=loop,
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        default_hooks=dict(
            checkpoint=dict(
                type='CheckpointHook', interval=3 if not by_epoch else 1, by_epoch=by_epoch
            )
        ),
        custom_hooks=custom_hooks,
        randomness=dict(seed=0),
        default_scope='anyup_plugin',
        experiment_name=f'test_{uuid.uuid4().hex[:8]}',
        **kw,
    )


def _weights(runner: Runner) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in runner.model.state_dict().items()}


ITER_LOOP = dict(type='ResumableIterBasedTrainLoop', max_iters=8)
INFINITE = dict(type='ResumableInfiniteSampler', shuffle=True)


def _stopped_and_resumed(tmp_path, loop, stop_loop, sampler, persistent, ckpt, hook=True):
    first = _runner(tmp_path / 'run', stop_loop, sampler, persistent, hook)
    first.train()
    resumed = _runner(
        tmp_path / 'run', loop, sampler, persistent, hook, resume=True, load_from=str(ckpt)
    )
    resumed.train()
    return resumed


@pytest.mark.parametrize('stop_at', [3, 4])  # the next batch comes from worker 1, or worker 0
def test_iteration_loop_with_two_workers_resumes_bitwise(tmp_path, stop_at):
    full = _runner(tmp_path / 'full', ITER_LOOP, INFINITE, persistent=False, hook=True)
    full.train()
    stop = dict(ITER_LOOP, max_iters=stop_at)
    resumed = _stopped_and_resumed(
        tmp_path, ITER_LOOP, stop, INFINITE, False, tmp_path / 'run' / f'iter_{stop_at}.pth'
    )
    assert resumed.iter == full.iter == 8
    expected, got = _weights(full), _weights(resumed)
    for key, value in expected.items():
        assert torch.equal(got[key], value), key


def test_without_the_hook_the_resumed_run_differs(tmp_path):
    """The control: the toy runs do depend on the stored random state."""
    full = _runner(tmp_path / 'full', ITER_LOOP, INFINITE, persistent=False, hook=False)
    full.train()
    stop = dict(ITER_LOOP, max_iters=3)
    resumed = _stopped_and_resumed(
        tmp_path, ITER_LOOP, stop, INFINITE, False, tmp_path / 'run' / 'iter_3.pth', hook=False
    )
    expected, got = _weights(full), _weights(resumed)
    assert not all(torch.equal(got[k], v) for k, v in expected.items())


@pytest.mark.parametrize('persistent', [True, False])
def test_epoch_loop_resumes_bitwise_at_an_epoch_checkpoint(tmp_path, persistent):
    loop = dict(type='EpochBasedTrainLoop', max_epochs=3)
    sampler = dict(type='DefaultSampler', shuffle=True)
    full = _runner(tmp_path / 'full', loop, sampler, persistent, hook=True)
    full.train()
    resumed = _stopped_and_resumed(
        tmp_path,
        loop,
        dict(loop, max_epochs=1),
        sampler,
        persistent,
        tmp_path / 'run' / 'epoch_1.pth',
    )
    assert resumed.epoch == full.epoch == 3
    expected, got = _weights(full), _weights(resumed)
    for key, value in expected.items():
        assert torch.equal(got[key], value), key


def test_checkpointed_state_is_weights_only_and_restores_every_generator(tmp_path):
    state = get_random_state()
    torch.save(state, tmp_path / 'state.pth')
    loaded = torch.load(tmp_path / 'state.pth', weights_only=True)
    draws = (random.random(), float(np.random.rand()), torch.rand(()).item())
    set_random_state(loaded)
    assert (random.random(), float(np.random.rand()), torch.rand(()).item()) == draws


def test_resume_worker_init_seeds_like_the_replaced_worker_then_restores_its_state():
    seeded: list[int] = []
    torch.manual_seed(5)
    state = get_random_state(cuda=False)
    expected = torch.rand(()).item()
    torch.manual_seed(0)
    init = ResumeWorkerInit(seeded.append, seed_ids=[1, 0], states=[None, state])
    init(0)
    assert seeded == [1]
    init(1)
    assert seeded == [1, 0]
    assert torch.rand(()).item() == expected
