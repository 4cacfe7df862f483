"""LinearProbeHead: one 1x1 conv with bias, no BN, no dropout, CE ignoring 255."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip('mmseg.models', reason='MMSegmentation (with mmcv ops) is not installed')

from mmengine.structures import PixelData
from mmseg.structures import SegDataSample

from anyup_plugin.mmseg.decode_heads import LinearProbeHead


def test_structure_is_a_single_conv():
    head = LinearProbeHead(in_channels=16, num_classes=5)
    convs = [m for m in head.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs == [head.conv_seg]
    assert head.conv_seg.kernel_size == (1, 1) and head.conv_seg.bias is not None
    assert head.dropout is None
    assert not any(isinstance(m, (torch.nn.modules.batchnorm._BatchNorm, torch.nn.GroupNorm))
                   for m in head.modules())  # fmt: skip
    params = sum(p.numel() for p in head.parameters())
    assert params == 16 * 5 + 5


def test_forward_and_loss_ignore_255():
    torch.manual_seed(0)
    head = LinearProbeHead(in_channels=8, num_classes=4)
    feats = [torch.randn(2, 8, 6, 6)]
    logits = head(feats)
    assert tuple(logits.shape) == (2, 4, 6, 6)

    labels = torch.randint(0, 4, (2, 6, 6))
    labels[0, :3] = 255
    samples = []
    for i in range(2):
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(data=labels[i : i + 1])
        sample.set_metainfo(dict(img_shape=(6, 6), pad_shape=(6, 6)))
        samples.append(sample)
    losses = head.loss(feats, samples, train_cfg={})
    expected = F.cross_entropy(logits, labels, ignore_index=255)  # mean over labelled pixels
    torch.testing.assert_close(losses['loss_ce'], expected)


def test_rejects_options_of_bigger_heads():
    with pytest.raises(TypeError, match='dropout_ratio'):
        LinearProbeHead(in_channels=8, num_classes=4, dropout_ratio=0.1)
