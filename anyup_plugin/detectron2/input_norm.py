"""Conversion of Detectron2's normalised input to the ImageNet normalisation AnyUp expects."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from anyup_plugin.core.encoder import IMAGENET_MEAN, IMAGENET_STD

__all__ = ['ImageNetFromDetectron2']


class ImageNetFromDetectron2(nn.Module):
    """Maps ``(pixel - PIXEL_MEAN) / PIXEL_STD`` images to RGB ImageNet normalisation.

    Detectron2's meta-architectures normalise images in ``INPUT.FORMAT`` channel order
    (``'BGR'`` by default) with ``MODEL.PIXEL_MEAN``/``MODEL.PIXEL_STD`` on the 0-255 scale
    before the backbone sees them. AnyUp's guidance and :class:`FrozenTimmEncoder` take RGB
    images normalised with ImageNet's statistics on the 0-1 scale, so this reorders the
    channels to RGB and applies the per-channel affine map ``(x * std + mean) / 255`` then
    ``(y - M) / S``.

    Args:
        pixel_mean: ``MODEL.PIXEL_MEAN`` (0-255 scale, in ``input_format`` order).
        pixel_std: ``MODEL.PIXEL_STD`` (0-255 scale, in ``input_format`` order).
        input_format: ``'RGB'`` or ``'BGR'``.

    Raises:
        ValueError: Another format, or statistics that are not 3 finite (positive) numbers.
    """

    def __init__(
        self, pixel_mean: Sequence[float], pixel_std: Sequence[float], input_format: str = 'BGR'
    ) -> None:
        super().__init__()
        if input_format not in ('RGB', 'BGR'):
            raise ValueError(
                f"INPUT.FORMAT must be 'RGB' or 'BGR' for AnyUp's colour guidance, got "
                f'{input_format!r}'
            )
        mean = torch.as_tensor(pixel_mean, dtype=torch.float64).flatten()
        std = torch.as_tensor(pixel_std, dtype=torch.float64).flatten()
        if (
            mean.numel() != 3
            or std.numel() != 3
            or not torch.isfinite(torch.cat([mean, std])).all()
        ):
            raise ValueError(
                f'MODEL.PIXEL_MEAN/PIXEL_STD must be 3 finite numbers each, got {pixel_mean!r} '
                f'and {pixel_std!r}'
            )
        if bool((std <= 0).any()):
            raise ValueError(f'MODEL.PIXEL_STD must be positive, got {pixel_std!r}')
        self.flip = input_format == 'BGR'
        if self.flip:
            mean, std = mean.flip(0), std.flip(0)
        ref_mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64) * 255.0
        ref_std = torch.tensor(IMAGENET_STD, dtype=torch.float64) * 255.0
        self.identity = not self.flip and bool(
            torch.allclose(mean, ref_mean, atol=1e-3) and torch.allclose(std, ref_std, atol=1e-3)
        )
        self.register_buffer('scale', (std / ref_std).float().view(1, 3, 1, 1), persistent=False)
        shift = ((mean - ref_mean) / ref_std).float().view(1, 3, 1, 1)
        self.register_buffer('shift', shift, persistent=False)
        self.input_format = input_format

    def forward(self, image: Tensor) -> Tensor:
        """(B, 3, H, W) Detectron2-normalised -> (B, 3, H, W) RGB ImageNet-normalised."""
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f'expected (B, 3, H, W) images, got shape {tuple(image.shape)}')
        if self.identity:
            return image
        if self.flip:
            image = image.flip(1)
        return image * self.scale.to(image.dtype) + self.shift.to(image.dtype)

    def extra_repr(self) -> str:
        return f'input_format={self.input_format!r}, identity={self.identity}'
