"""Config preparation of tools/train.py and tools/test.py (any MMEngine config)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip('mmengine', reason='the engine helpers are MMEngine components')

from anyup_plugin.engine import (
    cpu_model_wrapper_cfg,
    init_distributed,
    prepare_config,
)

CONFIG = """
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.1))
custom_hooks = [dict(type='EMAHook')]
work_dir = None
"""


@pytest.fixture
def config(tmp_path):
    path = tmp_path / 'toy_config.py'
    path.write_text(CONFIG)
    return str(path)


def test_hook_added_once_and_work_dir_default(config, tmp_path):
    cfg = prepare_config(config, cfg_options={'optim_wrapper.optimizer.lr': 0.5})
    assert cfg.work_dir.endswith('work_dirs/toy_config')
    assert cfg.optim_wrapper.optimizer.lr == 0.5
    types = [h['type'] for h in cfg.custom_hooks]
    assert types == ['EMAHook', 'WeightsOnlyCheckpointHook', 'RandomStateHook']
    assert 'anyup_plugin.engine' in cfg.custom_imports['imports']
    assert cfg.launcher == 'none'


def test_resume_auto_and_explicit(config, tmp_path):
    work = tmp_path / 'work'
    cfg = prepare_config(config, work_dir=str(work), resume='auto')
    assert cfg.resume is False  # nothing to resume from: start from scratch
    work.mkdir()
    torch.save({'x': torch.ones(1)}, work / 'iter_10.pth')
    cfg = prepare_config(config, work_dir=str(work), resume='auto')
    assert cfg.resume is True and cfg.load_from == str(work / 'iter_10.pth')
    cfg = prepare_config(config, work_dir=str(work), resume=str(work / 'iter_10.pth'))
    assert cfg.load_from == str(work / 'iter_10.pth')
    with pytest.raises(FileNotFoundError):
        prepare_config(config, work_dir=str(work), resume=str(work / 'nope.pth'))


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the CPU fallback')
def test_amp_falls_back_to_float32_without_gpu(config):
    cfg = prepare_config(config, amp=True)
    assert cfg.optim_wrapper.type == 'OptimWrapper'
    assert 'loss_scale' not in cfg.optim_wrapper


def test_cpu_wrapper_and_launcher_none():
    assert cpu_model_wrapper_cfg(None) == {'type': 'MMDistributedDataParallel', 'device_ids': None}
    cfg = cpu_model_wrapper_cfg({'find_unused_parameters': True})
    assert cfg['find_unused_parameters'] is True and cfg['device_ids'] is None
    assert init_distributed('none') is False
    with pytest.raises(ValueError, match='launcher'):
        init_distributed('ssh')


def test_training_loader_collate_is_wrapped_once(tmp_path):
    path = tmp_path / 'loader_config.py'
    path.write_text(
        CONFIG + "train_dataloader = dict(batch_size=2, collate_fn=dict(type='default_collate'))\n"
    )
    cfg = prepare_config(str(path))
    expected = dict(type='collate_with_random_state', collate_fn=dict(type='default_collate'))
    assert cfg.train_dataloader.collate_fn == expected
    from anyup_plugin.engine import add_random_state_tracking

    add_random_state_tracking(cfg)
    assert cfg.train_dataloader.collate_fn == expected
    assert [h['type'] for h in cfg.custom_hooks].count('RandomStateHook') == 1
