"""The command-line tools on a segmentation config: train, resume, test, and MMSeg's own train."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / 'configs' / 'mmseg' / 'ade20k_dinov2.py'


@pytest.fixture
def tiny_config(ade_root, shrink_config, tmp_path) -> Path:
    """The ADE20K probe config shrunk for the CPU, dumped to a file as a user would write it."""
    cfg = shrink_config(Config.fromfile(str(CONFIG)), ade_root, tmp_path / 'unused')
    path = tmp_path / 'ade20k_tiny.py'
    cfg.dump(str(path))
    return path


@pytest.mark.slow
def test_train_resume_and_test(tiny_config, tmp_path, run_python):
    work = tmp_path / 'run'
    run_python(['tools/train.py', str(tiny_config), '--work-dir', str(work)], REPO)
    first = work / 'epoch_1.pth'
    assert first.is_file()
    # The run's own checkpoints load under torch's safe default.
    state = torch.load(first, map_location='cpu', weights_only=True)
    assert state['meta']['epoch'] == 1

    # One more epoch, continued from the newest checkpoint in the work directory.
    run_python(
        [
            'tools/train.py',
            str(tiny_config),
            '--work-dir',
            str(work),
            '--resume',
            '--cfg-options',
            'train_cfg.max_epochs=2',
        ],
        REPO,
    )
    resumed = torch.load(work / 'epoch_2.pth', map_location='cpu', weights_only=True)
    assert resumed['meta']['epoch'] == 2
    logs = '\n'.join(p.read_text() for p in work.rglob('*.log'))
    assert 'resumed epoch: 1' in logs

    proc = run_python(
        ['tools/test.py', str(tiny_config), str(work / 'epoch_2.pth'), '--work-dir', str(tmp_path)],
        REPO,
    )
    assert 'mIoU' in proc.stdout + proc.stderr


KILL_HOOK = '''
"""Test-only hook: SIGKILLs its own process at the end of a given training epoch."""
import os
import signal

from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class KillAfterEpochHook(Hook):
    priority = 'LOWEST'  # after the checkpoint hook of the same epoch

    def __init__(self, after_epoch):
        self.after_epoch = after_epoch

    def after_train_epoch(self, runner):
        if runner.epoch + 1 >= self.after_epoch:
            os.kill(os.getpid(), signal.SIGKILL)
'''


@pytest.mark.slow
def test_killed_probe_run_resumes_to_the_uninterrupted_weights(shrink_config, tmp_path):
    """tools/train.py killed after the epoch-1 checkpoint, then --resume: the probe ends with
    the weights of the run that was never interrupted, bit for bit."""
    from anyup_plugin.testing import write_ade20k_layout_dataset

    data = write_ade20k_layout_dataset(
        tmp_path / 'data', num_train=8, num_val=2, height=64, width=80, seed=3
    )
    cfg = shrink_config(Config.fromfile(str(CONFIG)), data, tmp_path / 'unused')
    # The probe configs' loading: two persistent workers, whose random flips must go on where
    # they stood; two epochs of the cosine schedule.
    cfg.train_dataloader.num_workers = 2
    cfg.train_dataloader.persistent_workers = True
    cfg.train_cfg.max_epochs = 2
    for scheduler in cfg.param_scheduler:
        if 'T_max' in scheduler:
            scheduler.T_max = 2
            scheduler.end = 2
    config = tmp_path / 'probe.py'
    cfg.dump(str(config))
    cfg.custom_imports.imports = [*cfg.custom_imports.imports, 'kill_hook']
    cfg.custom_hooks = [
        *cfg.get('custom_hooks', []),
        dict(type='KillAfterEpochHook', after_epoch=1),
    ]
    kill_config = tmp_path / 'probe_kill.py'
    cfg.dump(str(kill_config))
    (tmp_path / 'kill_hook.py').write_text(KILL_HOOK)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(tmp_path)]))

    def train(config: Path, work: Path, *extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, 'tools/train.py', str(config), '--work-dir', str(work), *extra],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )

    full = train(config, tmp_path / 'full')
    assert full.returncode == 0, full.stderr[-3000:]
    killed = train(kill_config, tmp_path / 'run')
    assert killed.returncode == -9, killed.stderr[-3000:]
    stored = torch.load(tmp_path / 'run' / 'epoch_1.pth', weights_only=True)['random_state']
    assert stored['at_epoch_end'] and stored['num_workers'] == 2
    assert all(state is not None for state in stored['workers']['states'])
    resumed = train(config, tmp_path / 'run', '--resume')
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert 'resumed epoch: 1' in resumed.stdout + resumed.stderr

    expected = torch.load(tmp_path / 'full' / 'epoch_2.pth', weights_only=True)['state_dict']
    got = torch.load(tmp_path / 'run' / 'epoch_2.pth', weights_only=True)['state_dict']
    assert set(got) == set(expected)
    assert any(key.startswith('decode_head.') for key in expected)
    differ = [key for key, value in expected.items() if not torch.equal(got[key], value)]
    assert not differ, differ


@pytest.mark.slow
def test_config_runs_unchanged_with_mmsegs_own_train_tool(tiny_config, tmp_path, run_python):
    import mmseg

    mmseg_train = Path(mmseg.__file__).parent / '.mim' / 'tools' / 'train.py'
    if not mmseg_train.is_file():
        pytest.skip(f'this mmsegmentation install ships no tools/train.py ({mmseg_train})')
    work = tmp_path / 'mmseg_run'
    proc = run_python([str(mmseg_train), str(tiny_config), '--work-dir', str(work)], tmp_path)
    assert (work / 'epoch_1.pth').is_file()
    assert 'mIoU' in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ('config', 'instruction'),
    [
        ('ade20k_dinov2.py', 'download http://data.csail.mit.edu/places/ADEchallenge/'),
        ('demo_ade20k_layout.py', 'run `python tools/make_demo_dataset.py`'),
        ('voc2012_dinov2.py', 'download VOCtrainval_11-May-2012.tar'),
        ('coco_stuff27_dinov2.py', "run STEGO's src/download_datasets.py"),
    ],
)
def test_missing_data_root_of_a_config_says_how_to_get_it(tmp_path, config, instruction):
    """The dataset check names the command or download that makes the config's data."""
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS

    import anyup_plugin.mmseg  # noqa: F401  (registers the datasets)

    init_default_scope('mmseg')
    dataset = Config.fromfile(str(REPO / 'configs' / 'mmseg' / config)).train_dataloader.dataset
    # The config's root below a folder that does not hold it.
    missing = tmp_path / dataset.data_root
    dataset.data_root = str(missing)
    with pytest.raises(FileNotFoundError) as info:
        DATASETS.build(dataset)
    message = str(info.value)
    assert f'dataset root {str(missing)!r} does not exist or is not a folder.' in message
    assert f'To get it, {instruction}' in message
