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


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, f'{args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}'
    return proc


@pytest.fixture
def tiny_config(ade_root, shrink_config, tmp_path) -> Path:
    """The ADE20K probe config shrunk for the CPU, dumped to a file as a user would write it."""
    cfg = shrink_config(Config.fromfile(str(CONFIG)), ade_root, tmp_path / 'unused')
    path = tmp_path / 'ade20k_tiny.py'
    cfg.dump(str(path))
    return path


@pytest.mark.slow
def test_train_resume_and_test(tiny_config, tmp_path):
    work = tmp_path / 'run'
    _run(['tools/train.py', str(tiny_config), '--work-dir', str(work)], REPO)
    first = work / 'epoch_1.pth'
    assert first.is_file()
    # The run's own checkpoints load under torch's safe default.
    state = torch.load(first, map_location='cpu', weights_only=True)
    assert state['meta']['epoch'] == 1

    # One more epoch, continued from the newest checkpoint in the work directory.
    _run(
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

    proc = _run(
        ['tools/test.py', str(tiny_config), str(work / 'epoch_2.pth'), '--work-dir', str(tmp_path)],
        REPO,
    )
    assert 'mIoU' in proc.stdout + proc.stderr


@pytest.mark.slow
def test_config_runs_unchanged_with_mmsegs_own_train_tool(tiny_config, tmp_path):
    import mmseg

    mmseg_train = Path(mmseg.__file__).parent / '.mim' / 'tools' / 'train.py'
    if not mmseg_train.is_file():
        pytest.skip(f'this mmsegmentation install ships no tools/train.py ({mmseg_train})')
    work = tmp_path / 'mmseg_run'
    proc = _run([str(mmseg_train), str(tiny_config), '--work-dir', str(work)], tmp_path)
    assert (work / 'epoch_1.pth').is_file()
    assert 'mIoU' in proc.stdout + proc.stderr
