"""--resume under torch's weights_only=True loading, without making foreign files unsafe."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip('mmengine', reason='the engine helpers are MMEngine components')

from mmengine.logging import HistoryBuffer
from mmengine.model import BaseModel
from mmengine.runner import Runner

from anyup_plugin.engine import (
    find_resume_checkpoint,
    from_weights_only,
    to_weights_only,
    unsafe_entries,
)


class ToyModel(BaseModel):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        out = self.linear(inputs)
        if mode == 'loss':
            return {'loss': ((out - data_samples) ** 2).mean()}
        return out


class ToyData(torch.utils.data.Dataset):
    def __len__(self):
        return 16

    def __getitem__(self, i):
        x = torch.tensor([float(i), 1.0]) / 16
        return {'inputs': x, 'data_samples': x.sum(dim=0, keepdim=True)}


def _runner(work_dir, max_iters, resume=False, hook=True, load_from=None):
    return Runner(
        model=ToyModel(),
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=ToyData(),
            sampler=dict(type='InfiniteSampler', shuffle=True),
            batch_size=4,
            num_workers=0,
            collate_fn=dict(type='default_collate'),
        ),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=0.01)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False),
            logger=dict(type='LoggerHook', interval=1),
        ),
        custom_hooks=[dict(type='WeightsOnlyCheckpointHook')] if hook else [],
        resume=resume,
        load_from=load_from,
        randomness=dict(seed=0),
        default_scope='mmengine',
        experiment_name=f'toy_{max_iters}_{resume}_{hook}_{os.getpid()}_{id(work_dir)}',
    )


def test_conversion_round_trip_is_weights_only_loadable(tmp_path):
    buffer = HistoryBuffer([1.0, 2.5, 3.0], [1, 1, 2], max_length=10)
    ckpt = {
        'message_hub': {'log_scalars': {'train/loss': buffer}, 'runtime_info': {'iter': 3}},
        'meta': {
            'best_score': np.float64(0.75),
            'flags': np.array([True, False]),
            'names': np.array(['a', 'bc']),
            'dtype': np.dtype('float16'),
            'nested': [np.int64(4), (np.float32(0.5), 'x')],
        },
        'state_dict': {'w': torch.ones(2)},
    }
    assert unsafe_entries(ckpt)  # numpy objects and the HistoryBuffer
    converted = to_weights_only(ckpt)
    assert unsafe_entries(converted) == []
    assert isinstance(ckpt['message_hub']['log_scalars']['train/loss'], HistoryBuffer)  # untouched
    path = tmp_path / 'c.pth'
    torch.save(converted, path)
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(path)) == []
    restored = from_weights_only(torch.load(path, weights_only=True))
    buf = restored['message_hub']['log_scalars']['train/loss']
    assert isinstance(buf, HistoryBuffer) and buf.max_length == 10
    np.testing.assert_array_equal(buf.data[0], [1.0, 2.5, 3.0])
    np.testing.assert_array_equal(buf.data[1], [1, 1, 2])
    meta = restored['meta']
    assert type(meta['best_score']) is np.float64 and meta['best_score'] == 0.75
    assert meta['flags'].dtype == bool and meta['flags'].tolist() == [True, False]
    assert meta['names'].tolist() == ['a', 'bc']
    assert meta['dtype'] == np.dtype('float16')
    assert type(meta['nested'][0]) is np.int64 and type(meta['nested'][1][0]) is np.float32
    assert torch.equal(restored['state_dict']['w'], torch.ones(2))


def test_runner_checkpoints_resume_with_weights_only_loading(tmp_path):
    first = _runner(tmp_path, max_iters=4)
    first.train()
    ckpt = tmp_path / 'iter_4.pth'
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(ckpt)) == []
    torch.load(ckpt, weights_only=True)  # the default of torch.load since 2.6

    resumed = _runner(tmp_path, max_iters=6, resume=True)
    resumed.train()
    assert resumed.iter == 6
    losses = resumed.message_hub.get_scalar('train/loss')
    assert isinstance(losses, HistoryBuffer)
    assert len(losses.data[0]) == 6  # the history from before the resume is back


def test_plain_mmengine_checkpoints_still_refused(tmp_path):
    """Without the hook, MMEngine 0.10.7's checkpoints need unsafe unpickling (the problem)."""
    _runner(tmp_path, max_iters=2, hook=False).train()
    unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(tmp_path / 'iter_2.pth'))
    assert any('HistoryBuffer' in name for name in unsafe)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(tmp_path / 'iter_2.pth', weights_only=True)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, 'w'))


def test_a_malicious_checkpoint_is_not_unpickled(tmp_path):
    marker = tmp_path / 'code_ran'
    evil = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'meta': {'x': _Payload(str(marker))}}, evil)
    runner = _runner(tmp_path / 'run', max_iters=2, load_from=str(evil))
    with pytest.raises(pickle.UnpicklingError):
        runner.load_checkpoint(str(evil))
    assert not marker.exists()


def test_find_resume_checkpoint_skips_incomplete_files(tmp_path):
    assert find_resume_checkpoint(tmp_path / 'missing') is None
    for it in (2, 4):
        torch.save({'x': torch.ones(1)}, tmp_path / f'iter_{it}.pth')
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_4.pth'))
    assert find_resume_checkpoint(tmp_path) == str(tmp_path / 'iter_4.pth')
    # A kill during saving: the newest file is cut short.
    data = (tmp_path / 'iter_4.pth').read_bytes()
    (tmp_path / 'iter_6.pth').write_bytes(data[: len(data) // 2])
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_6.pth'))
    assert find_resume_checkpoint(tmp_path) == str(tmp_path / 'iter_4.pth')
    # A kill while writing the record itself.
    (tmp_path / 'last_checkpoint').write_text('')
    assert find_resume_checkpoint(tmp_path) == str(tmp_path / 'iter_4.pth')
