"""Conversion of network inputs from a framework's normalisation to ImageNet's.

Segmentation frameworks normalise images before the backbone sees them, each with its own
statistics and channel order (MMSeg's data preprocessor: RGB, 0-255 scale; Detectron2's
``MODEL.PIXEL_MEAN``/``PIXEL_STD`` in ``INPUT.FORMAT`` order, BGR by default). AnyUp's guidance
and :class:`~anyup_plugin.core.encoder.FrozenTimmEncoder` take RGB images normalised with
ImageNet's statistics; :class:`ToImageNetNorm` maps one to the other.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from anyup_plugin.constants import IMAGENET_MEAN_255, IMAGENET_STD_255

__all__ = ['IMAGENET_MEAN_255', 'IMAGENET_STD_255', 'ToImageNetNorm']


_CHANNEL_ORDERS = ('RGB', 'BGR')


def _stats(value: Sequence[float] | Tensor, name: str, positive: bool) -> Tensor:
    stats = torch.as_tensor(value, dtype=torch.float64).flatten()
    if stats.numel() != 3 or not bool(torch.isfinite(stats).all()):
        raise ValueError(f'{name} must be 3 finite numbers (0-255 scale), got {value!r}')
    if positive and bool((stats <= 0).any()):
        raise ValueError(f'{name} must be positive, got {value!r}')
    return stats


class ToImageNetNorm(nn.Module):
    """Maps images normalised with a source mean/std to RGB ImageNet mean/std normalisation.

    For inputs ``x = (pixel - mean) / std`` (statistics on the 0-255 scale, channels in
    ``channel_order``) this reorders the channels to RGB and computes ``(x * std + mean - M) / S``
    with ImageNet's ``M``, ``S`` on the same scale: a per-channel affine map, skipped when the
    input is already RGB and the statistics agree.

    Args:
        mean: Source mean (0-255 scale, in ``channel_order``); ``None`` for ImageNet's.
        std: Source standard deviation (likewise); ``None`` for ImageNet's.
        channel_order: ``'RGB'`` or ``'BGR'``: the channel order of the input images and of
            ``mean``/``std``.

    Raises:
        ValueError: Another channel order, or statistics that are not 3 finite numbers (the
            standard deviations positive).
    """

    def __init__(
        self,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        channel_order: str = 'RGB',
    ) -> None:
        super().__init__()
        if channel_order not in _CHANNEL_ORDERS:
            raise ValueError(
                f"channel_order must be 'RGB' or 'BGR' (AnyUp's guidance is colour), got "
                f'{channel_order!r}'
            )
        self.channel_order = channel_order
        self.register_buffer('scale', torch.ones(1, 3, 1, 1), persistent=False)
        self.register_buffer('shift', torch.zeros(1, 3, 1, 1), persistent=False)
        self.identity = True
        default_mean, default_std = IMAGENET_MEAN_255, IMAGENET_STD_255
        if channel_order == 'BGR':
            default_mean, default_std = default_mean[::-1], default_std[::-1]
        self.set_source(default_mean if mean is None else mean,
                        default_std if std is None else std)  # fmt: skip

    def set_source(self, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor) -> None:
        """Sets the statistics (0-255 scale, in ``channel_order``) the inputs were normalised with.

        Use mean 0 and std 1 for a preprocessor that does not normalise.
        """
        src_mean = _stats(mean, 'mean', positive=False)
        src_std = _stats(std, 'std', positive=True)
        if self.channel_order == 'BGR':
            src_mean, src_std = src_mean.flip(0), src_std.flip(0)
        ref_mean = torch.tensor(IMAGENET_MEAN_255, dtype=torch.float64)
        ref_std = torch.tensor(IMAGENET_STD_255, dtype=torch.float64)
        self.identity = self.channel_order == 'RGB' and bool(
            torch.allclose(src_mean, ref_mean, atol=1e-4)
            and torch.allclose(src_std, ref_std, atol=1e-4)
        )
        scale = (src_std / ref_std).view(1, 3, 1, 1)
        shift = ((src_mean - ref_mean) / ref_std).view(1, 3, 1, 1)
        self.scale.copy_(scale.to(self.scale.dtype))
        self.shift.copy_(shift.to(self.shift.dtype))
        self.source_mean = tuple(float(v) for v in src_mean)
        self.source_std = tuple(float(v) for v in src_std)

    def forward(self, image: Tensor) -> Tensor:
        """(B, 3, H, W) source-normalised -> (B, 3, H, W) RGB ImageNet-normalised."""
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f'expected (B, 3, H, W) images, got shape {tuple(image.shape)}')
        if self.identity:
            return image
        if self.channel_order == 'BGR':
            image = image.flip(1)
        return image * self.scale.to(image.dtype) + self.shift.to(image.dtype)

    def extra_repr(self) -> str:
        return (
            f'channel_order={self.channel_order!r}, source_mean={self.source_mean}, '
            f'source_std={self.source_std}'
        )
