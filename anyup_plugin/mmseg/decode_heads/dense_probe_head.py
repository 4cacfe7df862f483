"""Base of the NYU probe heads: a linear (1x1 conv) or DPT probe producing raw outputs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from torch import Tensor, nn

from .dpt_probe import DPTProbe

__all__ = ['DenseProbeHead']


class DenseProbeHead(BaseDecodeHead):
    """A probe from features to ``num_outputs`` raw channels per pixel.

    ``probe='linear'``: one 1x1 convolution with bias (``conv_seg``) on the ``in_index``-th map,
    AnyUp's linear probe on upsampled features. ``probe='dpt'``: Probe3D's DPT probe
    (:class:`DPTProbe`) on the four ``in_index`` maps, its last 3x3 conv being ``conv_seg``,
    followed by its last upsampling. Subclasses turn the raw outputs into predictions and
    losses. Convolutions keep PyTorch's default initialisation (as Probe3D's probes).

    Args:
        in_channels: Feature channels (linear) or the four maps' channels (DPT).
        num_outputs: Raw output channels (256 depth bins, 4 normal channels, ...).
        probe: ``'linear'`` or ``'dpt'``.
        in_index: Map index (linear) or the four indices (DPT).
        dpt_cfg: ``DPTProbe`` arguments (``channels``, ``kernel_size``, ``upsample``,
            ``align_corners``).
        loss_decode: Loss module config.
        **kwargs: Other ``BaseDecodeHead`` arguments (``align_corners``, ...).
    """

    def __init__(
        self,
        in_channels: int | Sequence[int],
        num_outputs: int,
        probe: str = 'linear',
        in_index: int | Sequence[int] = -1,
        dpt_cfg: dict | None = None,
        loss_decode: dict | None = None,
        init_cfg: dict | None = None,
        **kwargs,
    ) -> None:
        for key in ('channels', 'dropout_ratio', 'input_transform', 'num_classes'):
            if key in kwargs:
                raise TypeError(f'{type(self).__name__} does not take {key!r}')
        if probe == 'linear':
            channels, transform = in_channels, None
        elif probe == 'dpt':
            dpt_cfg = dict(dpt_cfg or {})
            channels, transform = dpt_cfg.setdefault('channels', 512), 'multiple_select'
            in_channels, in_index = list(in_channels), list(in_index)
        else:
            raise ValueError(f"probe must be 'linear' or 'dpt', got {probe!r}")
        super().__init__(
            in_channels=in_channels,
            channels=channels,
            num_classes=num_outputs,
            in_index=in_index,
            input_transform=transform,
            dropout_ratio=0.0,
            loss_decode=loss_decode,
            init_cfg=init_cfg,
            **kwargs,
        )
        self.probe = probe
        self.num_outputs = num_outputs
        if probe == 'dpt':
            self.dpt = DPTProbe(in_channels, **dpt_cfg)
            self.conv_seg = nn.Conv2d(channels, num_outputs, 3, padding=1)

    def raw_outputs(self, inputs: Sequence[Tensor]) -> Tensor:
        """Backbone/neck maps -> (B, num_outputs, h, w) raw probe outputs."""
        x = self._transform_inputs(inputs)
        if self.probe == 'linear':
            return self.conv_seg(x)
        x = self.conv_seg(self.dpt(x))
        return self.dpt.scale(x, self.dpt.upsample[2])

    @staticmethod
    def output_size(batch_img_metas: list[dict]) -> tuple[int, int]:
        """The (padded) input size predictions are resized to, as MMSeg's heads do."""
        meta = batch_img_metas[0]
        shape = meta['img_shape']
        # MMSeg's convention: a torch.Size img_shape is a slide-inference window.
        if not isinstance(shape, torch.Size) and 'pad_shape' in meta:
            shape = meta['pad_shape']
        return int(shape[0]), int(shape[1])

    @staticmethod
    def stack_field(batch_data_samples: list, key: str) -> Tensor:
        """(B, C, H, W) stack of ``data_sample.<key>.data``; a clear error if it is missing."""
        if any(key not in s for s in batch_data_samples):
            raise KeyError(
                f'data samples have no {key!r}: use LoadNYUAnnotations and PackNYUInputs in the '
                'pipeline'
            )
        return torch.stack([s.get(key).data for s in batch_data_samples])

    def resize(self, x: Tensor, size: tuple[int, int], mode: str) -> Tensor:
        """Resizes predictions to ``size`` (identity when already there)."""
        if tuple(x.shape[-2:]) == tuple(size):
            return x
        return F.interpolate(x, size=size, mode=mode, align_corners=self.align_corners)
