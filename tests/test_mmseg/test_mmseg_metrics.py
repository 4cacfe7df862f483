"""PresentClassIoUMetric: MMSeg's numbers plus the mIoU over the classes in the labels."""

from __future__ import annotations

import uuid

import pytest
import torch

pytest.importorskip('mmseg.models', reason='MMSegmentation (with mmcv ops) is not installed')

from mmengine.logging import MMLogger
from mmseg.evaluation import IoUMetric

from anyup_plugin.mmseg import PresentClassIoUMetric

CLASSES = ('sky', 'grass', 'car', 'boat')


def _sample(pred, label):
    return {
        'pred_sem_seg': {'data': torch.tensor(pred)[None]},
        'gt_sem_seg': {'data': torch.tensor(label)[None]},
    }


def _evaluate(metric):
    metric.dataset_meta = {'classes': CLASSES}
    # labels: sky 4 px, grass 2 px (one ignored pixel); predictions: one grass pixel called car
    label = [[0, 0, 0, 0], [1, 1, 255, 255]]
    pred = [[0, 0, 0, 0], [1, 2, 3, 0]]
    metric.process({}, [_sample(pred, label)])
    return metric.evaluate(1)


def test_present_class_miou_hand_computed(tmp_path, capsys):
    name = f'test_{uuid.uuid4().hex[:8]}'
    log_file = tmp_path / 'run.log'
    MMLogger.get_instance(name, log_file=str(log_file))
    ours = _evaluate(PresentClassIoUMetric())
    console = capsys.readouterr().out
    stock = _evaluate(IoUMetric())
    for key in ('aAcc', 'mIoU', 'mAcc'):
        assert ours[key] == pytest.approx(stock[key])
    # sky 4/4, grass 1/2, car 0/1 (a prediction only); boat absent everywhere (NaN)
    assert ours['aAcc'] == pytest.approx(100 * 5 / 6, abs=0.01)
    assert ours['mIoU'] == pytest.approx(100 * (1 + 0.5 + 0) / 3, abs=0.01)
    assert ours['mIoU_present'] == pytest.approx(100 * (1 + 0.5) / 2, abs=0.01)
    assert 'sky' in console and 'grass' in console and 'boat' not in console
    assert 'IoU of the 2 classes in the labels' in console
    text = log_file.read_text()
    assert 'per class results' in text and 'boat' in text  # the full table, in the file only
    assert 'per class results' not in console


def test_only_miou_is_supported():
    with pytest.raises(ValueError, match="'mIoU' only"):
        PresentClassIoUMetric(iou_metrics=['mDice'])
