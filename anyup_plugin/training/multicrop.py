"""The batch-level multi-crop step of AnyUp's training recipe.

From a batch of square images (``image_size``, 448 in the recipe) it makes

- the *guidance*: the whole image resized to ``input_size`` (224), which the teacher turns
  into the low-resolution input features (16 x 16 for patch 14) and which guides the student;
- ``num_crops`` random *crops* of ``crop_size`` (224) per image, aligned to the teacher's patch
  grid on the full image, whose teacher features are the high-resolution targets.

The student upsamples the low-resolution features to ``image_size / patch`` (32 x 32); crop
``k`` of image ``b`` starts at patch ``offsets[b, k] = (row, col)`` of that grid, so its target
is exactly ``output[b, :, row:row + n, col:col + n]`` with ``n = crop_size / patch``
(:func:`crop_feature_windows`).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .registry import MODELS
from .transforms import resize_square

__all__ = ['MultiCrop', 'MultiCropViews', 'crop_feature_windows', 'offsets_from_keys']


@dataclass
class MultiCropViews:
    """What :class:`MultiCrop` makes from a batch.

    Attributes:
        guidance: (B, 3, input_size, input_size) whole images.
        crops: (B, K, 3, crop_size, crop_size) patch-aligned crops of the full images.
        offsets: (B, K, 2) int64 crop origins ``(row, col)`` in patch units of the full image.
        patch_size: The teacher's patch size the crops are aligned to.
        output_size: ``image_size // patch_size``: the student's output side length.
        crop_patches: ``crop_size // patch_size``: a crop's side length in patches.
    """

    guidance: Tensor
    crops: Tensor
    offsets: Tensor
    patch_size: int
    output_size: int
    crop_patches: int


def crop_feature_windows(features: Tensor, offsets: Tensor, size: int) -> Tensor:
    """Cuts each crop's window out of full-image feature maps.

    Args:
        features: (B, C, H', W') features on the full image's patch grid.
        offsets: (B, K, 2) window origins ``(row, col)`` in cells of that grid.
        size: Window side length in cells.

    Returns:
        (B * K, C, size, size), ordered image-major like ``crops.flatten(0, 1)``.
    """
    b, k = offsets.shape[:2]
    if features.shape[0] != b:
        raise ValueError(f'features have batch {features.shape[0]}, offsets {b}')
    rows = offsets[..., 0].tolist()
    cols = offsets[..., 1].tolist()
    windows = [
        features[i, :, rows[i][j] : rows[i][j] + size, cols[i][j] : cols[i][j] + size]
        for i in range(b)
        for j in range(k)
    ]
    return torch.stack(windows, dim=0)


def offsets_from_keys(
    keys: Sequence[str], num_crops: int, max_offset: int, seed: int = 0
) -> Tensor:
    """Deterministic crop offsets per sample (for validation): the same key, the same crops.

    Args:
        keys: One string per sample (e.g. its file path).
        num_crops: Crops per sample.
        max_offset: Largest offset in patch units (inclusive).
        seed: Mixed into every key's seed.

    Returns:
        (len(keys), num_crops, 2) int64 offsets in ``[0, max_offset]``.
    """
    out = []
    for key in keys:
        gen = torch.Generator().manual_seed(zlib.crc32(key.encode('utf-8')) ^ seed)
        out.append(torch.randint(0, max_offset + 1, (num_crops, 2), generator=gen))
    return torch.stack(out, dim=0)


@MODELS.register_module()
class MultiCrop:
    """Makes the guidance image and the patch-aligned target crops of a batch.

    Args:
        input_size: Side length of the whole-image guidance / teacher input (224).
        crop_size: Side length of the target crops (224).
        num_crops: Crops per image (4).
    """

    def __init__(self, input_size: int = 224, crop_size: int = 224, num_crops: int = 4) -> None:
        if num_crops < 1:
            raise ValueError(f'num_crops must be >= 1, got {num_crops}')
        self.input_size = int(input_size)
        self.crop_size = int(crop_size)
        self.num_crops = int(num_crops)

    def check_patch_size(self, patch_size: int, image_size: int, name: str = 'teacher') -> None:
        """Raises ``ValueError`` unless ``patch_size`` divides every size the recipe uses."""
        for what, size in (
            ('crop size', self.crop_size),
            ('input size', self.input_size),
            ('image size', image_size),
        ):
            if size % patch_size:
                raise ValueError(
                    f'{name} has patch size {patch_size}, which does not divide the {what} '
                    f'{size}: crops could not be aligned to its patch grid. Choose sizes that '
                    f'are multiples of {patch_size}'
                )
        if self.crop_size > image_size:
            raise ValueError(f'crop size {self.crop_size} exceeds the image size {image_size}')

    def max_offset(self, image_size: int, patch_size: int) -> int:
        """Largest crop origin in patch units."""
        return (image_size - self.crop_size) // patch_size

    def __call__(
        self,
        images: Tensor,
        patch_size: int,
        offsets: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> MultiCropViews:
        """Makes the views of a batch.

        Args:
            images: (B, 3, S, S) normalised square images.
            patch_size: The teacher's patch size (must divide S, ``input_size`` and
                ``crop_size``).
            offsets: Optional (B, K, 2) crop origins in patch units; random if None.
            generator: CPU random generator for the offsets (default: torch's global one).

        Returns:
            The :class:`MultiCropViews`.
        """
        b, _, h, w = images.shape
        if h != w:
            raise ValueError(f'MultiCrop expects square images, got {h}x{w}')
        self.check_patch_size(patch_size, h)
        max_offset = self.max_offset(h, patch_size)
        if offsets is None:
            offsets = torch.randint(0, max_offset + 1, (b, self.num_crops, 2), generator=generator)
        offsets = offsets.to(device='cpu', dtype=torch.long)
        if (
            offsets.shape[:2] != (b, self.num_crops)
            or offsets.min() < 0
            or offsets.max() > max_offset
        ):
            raise ValueError(
                f'offsets must be ({b}, {self.num_crops}, 2) in [0, {max_offset}], '
                f'got shape {tuple(offsets.shape)}'
            )
        crops = crop_feature_windows(images, offsets * patch_size, self.crop_size)
        crops = crops.view(b, self.num_crops, *crops.shape[1:])
        return MultiCropViews(
            guidance=resize_square(images, self.input_size),
            crops=crops,
            offsets=offsets,
            patch_size=patch_size,
            output_size=h // patch_size,
            crop_patches=self.crop_size // patch_size,
        )
