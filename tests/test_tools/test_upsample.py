"""Tests of tools/upsample.py on randomly initialised or locally saved tiny weights."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from PIL import Image

from anyup_plugin import AnyUp

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / 'tools' / 'upsample.py'
SAMPLE = ROOT / 'anyup_plugin' / 'assets' / 'sample.png'


@pytest.fixture(scope='module')
def tool(load_tool):
    return load_tool('upsample')


@pytest.fixture
def picture(tmp_path) -> Path:
    path = tmp_path / 'in.png'
    Image.new('RGB', (90, 60), (200, 30, 60)).save(path)  # width 90, height 60
    return path


@pytest.fixture(scope='module')
def anyup_checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp('anyup') / 'anyup.pth'
    torch.save(AnyUp().state_dict(), path)
    return path


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith('.tmp'))


def test_sample_image_is_bundled(tool):
    assert tool.sample_image_path() == SAMPLE.resolve() or tool.sample_image_path() == SAMPLE
    assert SAMPLE.stat().st_size < 300_000
    with Image.open(SAMPLE) as img:
        assert img.size == (448, 448) and img.convert('RGB').mode == 'RGB'


def test_random_weights_run_writes_png_and_features(tool, picture, tmp_path, capsys):
    out = tmp_path / 'result' / 'panel.png'  # folder created by the tool
    feats = tmp_path / 'feats.pt'
    code = tool.main(
        [
            str(picture),
            '--random-weights',
            '--size',
            '30',
            '--output',
            str(out),
            '--save-features',
            str(feats),
            '--device',
            'cpu',
        ]
    )
    assert code == 0
    captured = capsys.readouterr()
    assert 'RANDOMLY INITIALISED' in captured.err
    # 90x60 -> short side 30 -> 45x30 -> cropped to multiples of 14: 42x28.
    with Image.open(out) as img:
        assert img.size == (3 * 42, 28)
    payload = torch.load(feats, weights_only=True)
    assert payload['lowres'].shape == (1, 384, 2, 3)
    assert payload['upsampled'].shape == (1, 384, 28, 42)
    assert payload['image'].shape == (1, 3, 28, 42)
    assert payload['random_weights'] is True
    assert leftovers(out.parent) == [] and leftovers(tmp_path) == []


def test_local_checkpoints_without_random_weights(
    tool, picture, tmp_path, anyup_checkpoint, capsys
):
    encoder_ckpt = tmp_path / 'resnet18.pth'
    torch.save(timm.create_model('resnet18', num_classes=0).state_dict(), encoder_ckpt)
    out = tmp_path / 'panel.png'
    code = tool.main(
        [
            str(picture),
            '--encoder',
            'resnet18',
            '--checkpoint',
            str(encoder_ckpt),
            '--upsampler-checkpoint',
            str(anyup_checkpoint),
            '--size',
            '64',
            '--output',
            str(out),
        ]
    )
    assert code == 0
    assert 'RANDOMLY' not in capsys.readouterr().err
    with Image.open(out) as img:  # 96x64 cropped to multiples of 32: 96x64
        assert img.size == (3 * 96, 64)


def test_offline_encoder_fails_and_leaves_no_output(
    tool, picture, tmp_path, anyup_checkpoint, monkeypatch, capsys
):
    real_create = timm.create_model

    def offline_create(name, pretrained=False, **kwargs):
        if pretrained:
            raise OSError('Network is unreachable')
        return real_create(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, 'create_model', offline_create)
    out = tmp_path / 'panel.png'
    code = tool.main(
        [str(picture), '--upsampler-checkpoint', str(anyup_checkpoint), '--output', str(out)]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert 'Network is unreachable' in err
    assert '--checkpoint' in err and '--random-weights' in err
    assert not out.exists() and leftovers(tmp_path) == []


def test_offline_upsampler_fails_and_leaves_no_output(tool, picture, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))  # nothing cached

    def offline_download(*args, **kwargs):
        raise OSError('Network is unreachable')

    monkeypatch.setattr(torch.hub, 'download_url_to_file', offline_download)
    out = tmp_path / 'panel.png'
    code = tool.main([str(picture), '--output', str(out)])
    assert code == 1
    err = capsys.readouterr().err
    assert 'anyup_multi_backbone' in err
    assert '--upsampler-checkpoint' in err and '--random-weights' in err
    assert not out.exists() and leftovers(tmp_path) == []


def test_failure_while_writing_leaves_no_output(tool, picture, tmp_path, monkeypatch):
    def failing_save(*args, **kwargs):
        raise OSError('disk full')

    monkeypatch.setattr(torch, 'save', failing_save)
    out, feats = tmp_path / 'panel.png', tmp_path / 'feats.pt'
    with pytest.raises(OSError, match='disk full'):
        tool.main(
            [
                str(picture),
                '--random-weights',
                '--size',
                '14',
                '--output',
                str(out),
                '--save-features',
                str(feats),
            ]
        )
    assert not out.exists() and not feats.exists()
    assert leftovers(tmp_path) == []


def test_missing_image_fails_early(tool, tmp_path, capsys):
    out = tmp_path / 'panel.png'
    assert tool.main([str(tmp_path / 'nope.jpg'), '--random-weights', '--output', str(out)]) == 1
    assert 'nope.jpg' in capsys.readouterr().err
    assert not out.exists()


def test_cli_subprocess_on_the_sample_image(tmp_path):
    out = tmp_path / 'demo.png'
    env = {**os.environ, 'PYTHONWARNINGS': 'ignore'}
    result = subprocess.run(
        [sys.executable, str(TOOL), '--random-weights', '--size', '28', '--output', str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert 'upsampling with AnyUp: done' in result.stdout
    with Image.open(out) as img:
        assert img.size == (3 * 28, 28)
