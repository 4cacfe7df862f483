"""Per-image data transforms of the AnyUp trainer (run in the data loader's workers).

A training pipeline is ``LoadImage -> ResizeCenterCrop(448) -> GuidanceAugmentation(224) ->
PackAnyUpInputs``: the clean square image (uint8, ``(3, 448, 448)``) becomes the model input,
and a photometrically augmented copy of the guidance image (the whole image resized to the
model's input size) travels along for the self-consistency loss. The batch-level multi-crop
step runs on the model side (:mod:`anyup_plugin.training.multicrop`) because it depends on the
teacher's patch size, which is chosen per step.

Transforms are plain callables on a results dict and return ``None`` to make the dataset draw
another sample (MMEngine's ``BaseDataset`` re-fetches).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from PIL import Image, ImageOps
from torch import Tensor
from torchvision.transforms import v2

from anyup_plugin.utils.geometry import center_crop_offsets, short_side_size

from .registry import TRANSFORMS

__all__ = [
    'GuidanceAugmentation',
    'LoadImage',
    'PackAnyUpInputs',
    'ResizeCenterCrop',
    'resize_square',
]

_skip_lock = threading.Lock()
_skipped = 0
_warned_paths: set[str] = set()


def resize_square(image: Tensor, size: int) -> Tensor:
    """Resizes images to ``size x size`` (bilinear, antialiased), keeping the dtype.

    The trainer uses this one function both for the clean guidance image (on the model side)
    and for the augmented one (in the data pipeline), so the two share their geometry exactly.

    Args:
        image: (3, H, W) or (B, 3, H, W), uint8 or floating point.
        size: Output side length.

    Returns:
        The resized image(s), same dtype (uint8 is rounded and clamped).
    """
    squeeze = image.dim() == 3
    x = image[None] if squeeze else image
    if tuple(x.shape[-2:]) != (size, size):
        out = F.interpolate(
            x.float(), size=(size, size), mode='bilinear', align_corners=False, antialias=True
        )
        x = out.round().clamp(0, 255).to(torch.uint8) if x.dtype == torch.uint8 else out.to(x.dtype)
    return x[0] if squeeze else x


@TRANSFORMS.register_module()
class LoadImage:
    """Reads ``results['img_path']`` into ``results['img']``, a (3, H, W) uint8 RGB tensor.

    EXIF orientation is applied. Unreadable or truncated files do not stop training: ``None`` is
    returned so the dataset draws another image, and the first time a file fails in a process
    a warning naming it and the running count of skipped images goes to the log (later failures
    of the same file are counted and logged at debug level, so a broken file does not flood
    the log once per epoch).

    Args:
        draft_size: If set, JPEGs are decoded at a reduced scale whose short side is still at
            least this many pixels (PIL's draft mode; much faster for large photos).
    """

    def __init__(self, draft_size: int | None = None) -> None:
        self.draft_size = draft_size

    def __call__(self, results: dict[str, Any]) -> dict[str, Any] | None:
        global _skipped
        path = results['img_path']
        try:
            with Image.open(path) as img:
                if self.draft_size is not None and img.format == 'JPEG':
                    w, h = img.size
                    scale = self.draft_size / max(1, min(w, h))
                    if scale < 1:
                        img.draft('RGB', (math.ceil(w * scale), math.ceil(h * scale)))
                img = ImageOps.exif_transpose(img)
                array = np.asarray(img.convert('RGB'))
        except Exception as exc:
            with _skip_lock:
                _skipped += 1
                count = _skipped
                first = path not in _warned_paths
                _warned_paths.add(path)
            print_log(
                f'skipping unreadable image {path} ({type(exc).__name__}: {exc}); '
                f'{count} image(s) skipped so far in this process',
                logger='current',
                level=logging.WARNING if first else logging.DEBUG,
            )
            return None
        results['img'] = torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()
        results['ori_shape'] = tuple(array.shape[:2])
        return results


@TRANSFORMS.register_module()
class ResizeCenterCrop:
    """Resizes the short side to ``size`` (bilinear, antialiased) and centre-crops a square.

    Args:
        size: Output side length (448 in the published recipe).
    """

    def __init__(self, size: int = 448) -> None:
        self.size = int(size)

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        img = results['img']
        h, w = img.shape[-2:]
        new_h, new_w = short_side_size(h, w, self.size)
        if (new_h, new_w) != (h, w):
            img = v2.functional.resize(img, [new_h, new_w], antialias=True)
        top, left = center_crop_offsets(new_h, new_w, self.size, self.size)
        results['img'] = img[:, top : top + self.size, left : left + self.size].contiguous()
        return results


class _GaussianNoise:
    """Adds N(0, sigma^2) noise to a uint8 image, sigma drawn from a range (in [0, 1] units)."""

    def __init__(self, sigma: Sequence[float]) -> None:
        self.sigma = (float(sigma[0]), float(sigma[1]))

    def __call__(self, img: Tensor) -> Tensor:
        sigma = torch.empty(()).uniform_(*self.sigma).item()
        noisy = img.float() + torch.randn(img.shape) * (sigma * 255.0)
        return noisy.round().clamp(0, 255).to(torch.uint8)


@TRANSFORMS.register_module()
class GuidanceAugmentation:
    """Makes the photometrically augmented guidance image for the self-consistency loss.

    The clean image (``results[in_key]``) is resized to ``size`` with :func:`resize_square`
    (exactly as the model resizes the clean guidance) and then, each with its own
    probability: colour jitter, grayscale, Gaussian blur, JPEG compression and Gaussian noise.
    Geometry is never changed, so the augmented and the clean guidance stay aligned pixel for
    pixel. Set a probability to 0 to switch a step off.

    Args:
        size: Side length of the guidance image (the model's input size, 224).
        color_jitter: ``(brightness, contrast, saturation, hue)`` for torchvision's
            ``ColorJitter``.
        color_jitter_prob: Probability of colour jitter.
        grayscale_prob: Probability of converting to grayscale (kept as 3 channels).
        blur_sigma: Range of the Gaussian blur's sigma in pixels.
        blur_kernel_size: Blur kernel size (odd).
        blur_prob: Probability of blurring.
        jpeg_quality: Range of JPEG qualities (1-100).
        jpeg_prob: Probability of JPEG compression.
        noise_sigma: Range of the Gaussian noise's standard deviation, in units of the full
            intensity range.
        noise_prob: Probability of adding noise.
        in_key: Results key of the clean (3, H, W) uint8 image.
        out_key: Results key for the augmented (3, size, size) uint8 image.
    """

    def __init__(
        self,
        size: int = 224,
        color_jitter: Sequence[float] = (0.4, 0.4, 0.4, 0.1),
        color_jitter_prob: float = 0.8,
        grayscale_prob: float = 0.2,
        blur_sigma: Sequence[float] = (0.1, 2.0),
        blur_kernel_size: int = 5,
        blur_prob: float = 0.5,
        jpeg_quality: Sequence[int] = (30, 95),
        jpeg_prob: float = 0.5,
        noise_sigma: Sequence[float] = (0.0, 0.05),
        noise_prob: float = 0.5,
        in_key: str = 'img',
        out_key: str = 'guidance_aug',
    ) -> None:
        self.size = int(size)
        self.in_key = in_key
        self.out_key = out_key
        brightness, contrast, saturation, hue = color_jitter
        self.steps = [
            (color_jitter_prob, v2.ColorJitter(brightness, contrast, saturation, hue)),
            (grayscale_prob, v2.Grayscale(num_output_channels=3)),
            (blur_prob, v2.GaussianBlur(blur_kernel_size, sigma=tuple(blur_sigma))),
            (jpeg_prob, v2.JPEG(quality=tuple(int(q) for q in jpeg_quality))),
            (noise_prob, _GaussianNoise(noise_sigma)),
        ]

    def augment(self, img: Tensor) -> Tensor:
        """Applies the photometric steps to a (3, H, W) uint8 image."""
        for prob, step in self.steps:
            if prob > 0 and torch.rand(()).item() < prob:
                img = step(img)
        return img

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        guidance = resize_square(results[self.in_key], self.size)
        results[self.out_key] = self.augment(guidance).contiguous()
        return results


@TRANSFORMS.register_module()
class PackAnyUpInputs:
    """Packs a sample as ``{'inputs': img, 'data_samples': {...}}`` for the trainer.

    Args:
        keys: Extra results keys to carry in ``data_samples`` (e.g. ``'guidance_aug'``);
            ``img_path`` is always carried.
    """

    def __init__(self, keys: Sequence[str] = ()) -> None:
        self.keys = tuple(keys)

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        samples = {'img_path': results['img_path']}
        for key in self.keys:
            samples[key] = results[key]
        return {'inputs': results['img'], 'data_samples': samples}
