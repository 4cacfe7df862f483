"""Upsampling an encoder's features of one picture, from file to PCA panel."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor, nn

from anyup_plugin.constants import IMAGENET_MEAN, IMAGENET_STD
from anyup_plugin.utils.geometry import center_crop_offsets, short_side_size
from anyup_plugin.utils.io import atomic_write

from .visualization import feature_panel

__all__ = [
    'UpsampledFeatures',
    'image_to_tensor',
    'load_image',
    'sample_image_path',
    'save_upsampled_features',
    'upsample_image',
]


def sample_image_path() -> Path:
    """Path of the bundled sample picture (448 x 448, generated, no licence to track)."""
    return Path(str(resources.files('anyup_plugin').joinpath('assets', 'sample.png')))


def load_image(path: str | os.PathLike, size: int, multiple: int = 1) -> Image.Image:
    """Opens an image as RGB, resizes its short side to ``size``, crops to a ``multiple``.

    The resize is torchvision's ``Resize(size)`` arithmetic (bicubic); the centre crop then
    trims each side down to a multiple of ``multiple`` (an encoder's patch size), so the
    feature grid tiles the image exactly, removing fewer than ``multiple`` pixels per side.

    Args:
        path: Image file.
        size: Short side after resizing, at least ``multiple``.
        multiple: Each side of the result is a multiple of it.

    Returns:
        The RGB image.

    Raises:
        ValueError: ``size`` below ``multiple``, or a file that is not an image.
        FileNotFoundError: ``path`` does not exist.
    """
    if size < multiple:
        raise ValueError(f'size must be at least the patch size {multiple}, got {size}')
    try:
        with Image.open(path) as img:
            image = img.convert('RGB')
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise ValueError(f'could not read image {os.fspath(path)!r}: {exc}') from exc
    new_h, new_w = short_side_size(image.height, image.width, size)
    image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
    crop_h, crop_w = new_h - new_h % multiple, new_w - new_w % multiple
    top, left = center_crop_offsets(new_h, new_w, crop_h, crop_w)
    return image.crop((left, top, left + crop_w, top + crop_h))


def image_to_tensor(image: Image.Image) -> Tensor:
    """PIL RGB image -> (1, 3, H, W) float32, normalised with the ImageNet mean/std."""
    data = torch.frombuffer(bytearray(image.convert('RGB').tobytes()), dtype=torch.uint8)
    x = data.view(image.height, image.width, 3).permute(2, 0, 1).float() / 255.0
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return ((x - mean) / std).unsqueeze(0)


@dataclass
class UpsampledFeatures:
    """One picture's features before and after upsampling.

    Attributes:
        image: (1, 3, H, W) ImageNet-normalised input.
        lowres: (1, C, h, w) encoder features.
        upsampled: (1, C, H, W) upsampled features.
    """

    image: Tensor
    lowres: Tensor
    upsampled: Tensor


@torch.no_grad()
def upsample_image(
    image: Image.Image | Tensor, encoder: nn.Module, upsampler: nn.Module
) -> UpsampledFeatures:
    """Encodes a picture and upsamples the first returned feature map to its size.

    Args:
        image: An RGB image, or a (1, 3, H, W) ImageNet-normalised tensor, on the device of
            the models.
        encoder: Returns a list of (1, C, h, w) maps for an image (e.g.
            :class:`~anyup_plugin.core.FrozenTimmEncoder`).
        upsampler: Called as ``upsampler(image, features)`` (e.g. :class:`AnyUp`).

    Returns:
        The input tensor and both feature maps, on the models' device.
    """
    if isinstance(image, Image.Image):
        device = next(iter(encoder.parameters()), torch.empty(0)).device
        image = image_to_tensor(image).to(device)
    lowres = encoder(image)[0]
    return UpsampledFeatures(image, lowres, upsampler(image, lowres))


def save_upsampled_features(
    result: UpsampledFeatures,
    panel_path: str | os.PathLike | None = None,
    features_path: str | os.PathLike | None = None,
    metadata: dict[str, Any] | None = None,
) -> None:
    """Writes the PCA panel (PNG) and/or the tensors (``torch.save``), all or nothing.

    Every file is written to a temporary file beside its destination and renamed only once
    all are complete, so a failure leaves no partial or stale-looking output.

    Args:
        result: What :func:`upsample_image` returned.
        panel_path: PNG of image | low-res PCA | upsampled PCA (same projection), or None.
        features_path: ``.pt`` file with ``lowres``, ``upsampled``, ``image`` (CPU float32
            tensors) and ``metadata``'s entries, or None.
        metadata: Plain values stored beside the tensors.
    """
    lowres = result.lowres.float().cpu()
    upsampled = result.upsampled.float().cpu()
    image = result.image.float().cpu()
    with contextlib.ExitStack() as stack:
        if panel_path is not None:
            panel = feature_panel(image[0], lowres, upsampled, IMAGENET_MEAN, IMAGENET_STD)
            tmp = stack.enter_context(atomic_write(panel_path, suffix='.tmp'))
            panel.save(tmp, format='PNG')
        if features_path is not None:
            payload = {
                'lowres': lowres.contiguous(),
                'upsampled': upsampled.contiguous(),
                'image': image,
                **(metadata or {}),
            }
            tmp = stack.enter_context(atomic_write(features_path, suffix='.tmp'))
            torch.save(payload, tmp)
