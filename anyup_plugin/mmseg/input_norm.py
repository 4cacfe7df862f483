"""Conversion of network inputs from the data preprocessor's normalisation to ImageNet's."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ['IMAGENET_MEAN_255', 'IMAGENET_STD_255', 'ToImageNetNorm']

#: ImageNet statistics on the 0-255 scale, the convention of MMSeg's ``SegDataPreProcessor``.
IMAGENET_MEAN_255: tuple[float, float, float] = (123.675, 116.28, 103.53)
IMAGENET_STD_255: tuple[float, float, float] = (58.395, 57.12, 57.375)


def _stats(value: Sequence[float] | Tensor, name: str, positive: bool) -> Tensor:
    stats = torch.as_tensor(value, dtype=torch.float64).flatten()
    if stats.numel() != 3 or not bool(torch.isfinite(stats).all()):
        raise ValueError(f'{name} must be 3 finite numbers (RGB, 0-255 scale), got {value!r}')
    if positive and bool((stats <= 0).any()):
        raise ValueError(f'{name} must be positive, got {value!r}')
    return stats


class ToImageNetNorm(nn.Module):
    """Maps images normalised with a source mean/std to ImageNet mean/std normalisation.

    MMSeg normalises images in its data preprocessor with statistics on the 0-255 scale
    (``x = (pixel - mean) / std``). AnyUp's guidance and :class:`FrozenTimmEncoder` take
    ImageNet-normalised input, so this computes ``(x * std + mean - M) / S`` with ImageNet's
    ``M``, ``S`` on the same scale: a per-channel affine map, skipped when the statistics
    already agree.

    Args:
        mean: Source mean (0-255 scale); ``None`` for ImageNet's.
        std: Source standard deviation (0-255 scale); ``None`` for ImageNet's.
    """

    def __init__(
        self, mean: Sequence[float] | None = None, std: Sequence[float] | None = None
    ) -> None:
        super().__init__()
        self.register_buffer('scale', torch.ones(1, 3, 1, 1), persistent=False)
        self.register_buffer('shift', torch.zeros(1, 3, 1, 1), persistent=False)
        self.identity = True
        self.set_source(IMAGENET_MEAN_255 if mean is None else mean,
                        IMAGENET_STD_255 if std is None else std)  # fmt: skip

    def set_source(self, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor) -> None:
        """Sets the statistics (0-255 scale, RGB order) the incoming images were normalised with.

        Use mean 0 and std 1 for a preprocessor that does not normalise.
        """
        src_mean = _stats(mean, 'mean', positive=False)
        src_std = _stats(std, 'std', positive=True)
        ref_mean = torch.tensor(IMAGENET_MEAN_255, dtype=torch.float64)
        ref_std = torch.tensor(IMAGENET_STD_255, dtype=torch.float64)
        self.identity = bool(
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
        """(B, 3, H, W) source-normalised -> (B, 3, H, W) ImageNet-normalised."""
        if self.identity:
            return image
        return image * self.scale.to(image.dtype) + self.shift.to(image.dtype)

    def extra_repr(self) -> str:
        return f'source_mean={self.source_mean}, source_std={self.source_std}'
