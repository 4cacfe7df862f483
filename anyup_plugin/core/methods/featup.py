"""FeatUp's learned joint bilateral upsampler, the "JBU stack" (Fu et al., ICLR 2024).

Four x2 steps, each a joint bilateral filter over a bicubically upsampled map whose 7 x 7
kernel per output pixel is a learned range kernel (a softmax over key similarities of the
guidance image, pooled to that step's size) times a Gaussian spatial kernel, normalised and
then corrected by a small learned "fixup" projection; a residual 1 x 1 convolution follows the
last step. The stack therefore turns (h, w) features into exactly (16 h, 16 w) features,
whatever the image size: the guidance is average-pooled to each step's size. The parameters
that depend on the feature width are the final 1 x 1 convolution only, so every checkpoint is
for one backbone.

Checkpoints are FeatUp's released ``<backbone>_jbu_stack_cocostuff.ckpt`` files (PyTorch
Lightning checkpoints: the training module's weights under ``'state_dict'``, the featurizer
under ``model.``, the upsampler under ``upsampler.``); only the ``upsampler.`` keys are read,
strictly. The kernel application, a C++/CUDA extension in the published code, is
:func:`~anyup_plugin.core.methods.adaptive_conv.adaptive_conv` here.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from anyup_plugin.core.checkpoints import (
    CheckpointMismatchError,
    check_state_dict_fits,
)

from .adaptive_conv import adaptive_conv
from .base import Size, UpsamplingMethod, read_state_dict
from .registry import describe_checkpoint, locate_keys

__all__ = [
    'CHECKPOINT_PREFIX',
    'CHECKPOINT_URL',
    'PUBLISHED_BACKBONES',
    'UPSAMPLING_FACTOR',
    'FeatUpJBU',
    'LearnedRangeJBU',
]

logger = logging.getLogger(__name__)

#: The stack's only output size is this many times the feature map (four x2 steps).
UPSAMPLING_FACTOR = 16

#: Where the upsampler's weights sit in FeatUp's checkpoint files.
CHECKPOINT_PREFIX = 'upsampler.'

#: FeatUp's released checkpoints; ``norm`` is ``''`` (trained on channel-LayerNormed
#: features) or ``'no_norm/'``, ``backbone`` a key of :data:`PUBLISHED_BACKBONES`.
CHECKPOINT_URL = (
    'https://marhamilresearch4.blob.core.windows.net/feature-upsampling-public/pretrained/'
    '{norm}{backbone}_jbu_stack_cocostuff.ckpt'
)

#: The backbone names in FeatUp's checkpoint file names -> (feature channels, patch size):
#: DINOv2 ViT-S/14, DINO ViT-S/16, supervised ViT-S/16, CLIP and MaskCLIP ViT-B/16 (512-d
#: projections), ResNet-50 (last stage, stride 32).
PUBLISHED_BACKBONES: dict[str, tuple[int, int]] = {
    'dinov2': (384, 14),
    'dino16': (384, 16),
    'vit': (384, 16),
    'clip': (512, 16),
    'maskclip': (512, 16),
    'resnet50': (2048, 32),
}

# The constructor's defaults: the DINOv2 ViT-S/14 release.
_DEFAULT_CHANNELS, _DEFAULT_PATCH = PUBLISHED_BACKBONES['dinov2']

_PUBLISHED_FILE = re.compile(r'^([a-z0-9]+)_jbu_stack_cocostuff\.ckpt$')

_WHERE_TO_GET = (
    "FeatUp's JBU weights are published per backbone, e.g. for DINOv2 ViT-S/14 "
    + CHECKPOINT_URL.format(norm='', backbone='dinov2')
    + ' (or its no_norm/ variant; the list is at '
    'https://github.com/mhamilton723/FeatUp#using-pretrained-upsamplers). Download the file '
    'and pass its local path; nothing is downloaded here.'
)
_VALID_CHECKPOINT = (
    "one of FeatUp's released <backbone>_jbu_stack_cocostuff.ckpt files (a PyTorch Lightning "
    "checkpoint holding the upsampler under 'state_dict' with the prefix 'upsampler.')"
)


class LearnedRangeJBU(nn.Module):
    """One x2 step of the stack: a joint bilateral filter with a learned range kernel.

    Parameter names are the published ones (``range_temp``, ``range_proj.{0,3}``,
    ``fixup_proj.{0,3}``, ``sigma_spatial``), so the released weights load as they are.

    Args:
        guidance_dim: Channels of the guidance (3: the RGB image).
        key_dim: Width of the range projection the kernel's similarities are computed in.
        radius: The kernel is ``2 * radius + 1`` pixels wide.
    """

    def __init__(self, guidance_dim: int = 3, key_dim: int = 32, radius: int = 3) -> None:
        super().__init__()
        self.radius = radius
        self.diameter = 2 * radius + 1
        taps = self.diameter**2
        self.range_temp = nn.Parameter(torch.tensor(0.0))
        self.range_proj = nn.Sequential(
            nn.Conv2d(guidance_dim, key_dim, 1),
            nn.GELU(),
            nn.Dropout2d(0.1),
            nn.Conv2d(key_dim, key_dim, 1),
        )
        self.fixup_proj = nn.Sequential(
            nn.Conv2d(guidance_dim + taps, taps, 1),
            nn.GELU(),
            nn.Dropout2d(0.1),
            nn.Conv2d(taps, taps, 1),
        )
        self.sigma_spatial = nn.Parameter(torch.tensor(1.0))

    def range_kernel(self, guidance: Tensor) -> Tensor:
        """Softmax over each pixel's neighbours of projected-guidance similarities.

        Args:
            guidance: (B, G, H, W) guidance at the output size.

        Returns:
            (B, D * D, H, W) with D the diameter, taps in row-major order (row offset outer).
        """
        keys = self.range_proj(guidance)
        height, width = keys.shape[-2:]
        padded = F.pad(keys, [self.radius] * 4, mode='reflect')
        # One (B, H, W) similarity map per tap instead of an unfold, which would hold D * D
        # copies of the keys (about 8 GiB at 1168 x 1168 for the last step).
        logits = torch.stack(
            [
                (padded[:, :, i : i + height, j : j + width] * keys).sum(1)
                for i in range(self.diameter)
                for j in range(self.diameter)
            ],
            dim=1,
        )
        temperature = self.range_temp.exp().clamp(1e-4, 1e4)
        return F.softmax(temperature * logits, dim=1)

    def spatial_kernel(self) -> Tensor:
        """(1, D * D, 1, 1) Gaussian of the tap offsets, spread over [-1, 1] per axis."""
        offsets = torch.linspace(
            -1, 1, self.diameter, dtype=self.sigma_spatial.dtype, device=self.sigma_spatial.device
        )
        squared = offsets[:, None].square() + offsets[None, :].square()
        return torch.exp(-squared / (2 * self.sigma_spatial**2)).reshape(1, -1, 1, 1)

    def forward(self, source: Tensor, guidance: Tensor) -> Tensor:
        """Upsamples ``source`` to the guidance's size.

        Args:
            source: (B, C, h, w) features.
            guidance: (B, G, H, W) guidance, already pooled to the output size (the stack
                uses H = 2 h, W = 2 w).

        Returns:
            (B, C, H, W) features.
        """
        batch, _, height, width = guidance.shape
        kernel = self.range_kernel(guidance) * self.spatial_kernel()
        kernel = kernel / kernel.sum(1, keepdim=True).clamp_min(1e-7)
        kernel = kernel + 0.1 * self.fixup_proj(torch.cat([kernel, guidance], dim=1))
        # (B, H, W, D, D) as a view of the (B, D * D, H, W) kernel: no copy.
        filters = kernel.view(batch, self.diameter, self.diameter, height, width).permute(
            0, 3, 4, 1, 2
        )
        # One expression, so that the unpadded copy is freed before the output is allocated.
        padded = F.pad(
            F.interpolate(source, (height, width), mode='bicubic', align_corners=False),
            [self.radius] * 4,
            mode='reflect',
        )
        return adaptive_conv(padded, filters)


class FeatUpJBU(UpsamplingMethod):
    """FeatUp's JBU stack: (B, C, h, w) features and the image -> (B, C, 16 h, 16 w).

    The image guides every step after average pooling to that step's size, so it may have any
    size; with the default ``patch_size`` it must be the one the features were computed from
    (14 h x 14 w up to the backbone's cropping). FeatUp normalises images with the ImageNet
    statistics too, so the image is used as given.

    FeatUp's checkpoints outside ``no_norm/`` were trained on features passed through a
    channel LayerNorm whose weights are the file's ``model.1.norm.*`` keys (the featurizer's
    side, not read here); this module upsamples the features it is given.

    Args:
        feature_channels: C, the width the weights are for (384: DINOv2 ViT-S/14).
        patch_size: The backbone's patch size, checked against the image (``None``: any).

    Attributes:
        up1, up2, up3, up4: The x2 steps (:class:`LearnedRangeJBU`).
        fixup_proj: Dropout and the final 1 x 1 convolution, added with weight 0.1.
    """

    name = 'featup'
    uses_image = True
    checkpoint_keys_hint = (
        'upsampler.up1.range_temp',
        'upsampler.up1.sigma_spatial',
        'upsampler.fixup_proj.1.weight',
    )

    def __init__(
        self, feature_channels: int = _DEFAULT_CHANNELS, patch_size: int | None = _DEFAULT_PATCH
    ) -> None:
        super().__init__()
        self.feature_channels = feature_channels
        self.patch_size = patch_size
        self.up1 = LearnedRangeJBU()
        self.up2 = LearnedRangeJBU()
        self.up3 = LearnedRangeJBU()
        self.up4 = LearnedRangeJBU()
        self.fixup_proj = nn.Sequential(
            nn.Dropout2d(0.2), nn.Conv2d(feature_channels, feature_channels, 1)
        )

    @staticmethod
    def output_size_for(feature_size: Size) -> Size:
        """The one output size the stack produces for (h, w) features: (16 h, 16 w)."""
        height, width = feature_size
        return UPSAMPLING_FACTOR * int(height), UPSAMPLING_FACTOR * int(width)

    def forward(self, image: Tensor | None, features: Tensor, output_size: Size) -> Tensor:
        """Upsamples one map by 16.

        Args:
            image: (B, 3, H, W) ImageNet-normalised RGB.
            features: (B, C, h, w) features, h and w at least 2.
            output_size: Must be (16 h, 16 w).

        Returns:
            (B, C, 16 h, 16 w) features in the features' dtype.

        Raises:
            ValueError: No image, shapes that do not fit, or another output size (the
                message names the one the stack produces).
            WrongFeaturesError: Features of another width or patch size than the weights'.
        """
        if image is None:
            raise ValueError("FeatUp's JBU is guided by the image: pass the (B, 3, H, W) image")
        if image.dim() != 4 or features.dim() != 4 or image.shape[0] != features.shape[0]:
            raise ValueError(
                'FeatUpJBU takes a (B, 3, H, W) image and (B, C, h, w) features of one batch, '
                f'got shapes {tuple(image.shape)} and {tuple(features.shape)}'
            )
        self.check_features(image, features)
        height, width = features.shape[-2:]
        produced = self.output_size_for((height, width))
        if min(height, width) < 2:
            # The first step pads its 2 h x 2 w map by reflection with 3 pixels.
            raise ValueError(
                f"FeatUp's JBU needs feature maps of at least 2 x 2, got {height} x {width} "
                f'(features of shape {tuple(features.shape)}); use a larger image or a '
                "method without this limit ('bilinear', 'anyup')."
            )
        if tuple(int(s) for s in output_size) != produced:
            raise ValueError(
                f"FeatUp's JBU stack upsamples by exactly {UPSAMPLING_FACTOR}: {height} x "
                f'{width} features give {produced[0]} x {produced[1]}, not output_size '
                f'{tuple(output_size)}. Ask for {produced} and resize the result (e.g. '
                "F.interpolate(out, size, mode='bilinear'), as FeatUp's own training does), "
                "or use a method that produces any size ('anyup', 'bilinear')."
            )
        guidance = image.to(features.dtype)
        out = features
        for step in (self.up1, self.up2, self.up3, self.up4):
            small = F.adaptive_avg_pool2d(guidance, (2 * out.shape[-2], 2 * out.shape[-1]))
            out = step(out, small)
        # In place on the convolution's fresh output (its backward does not need it): one
        # output-sized temporary instead of two, 2 GiB less at 1168 x 1168 x 384.
        return self.fixup_proj(out).mul_(0.1).add_(out)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, **kwargs: Any) -> FeatUpJBU:
        """Builds the stack from one of FeatUp's released ``.ckpt`` files.

        Reads the file with ``torch.load(weights_only=True)`` and loads its ``upsampler.``
        keys (from ``'state_dict'``, or from a plain state dict of FeatUp's hub model)
        strictly. ``feature_channels`` is read from the weights; ``patch_size`` from a
        published file name (``<backbone>_jbu_stack_cocostuff.ckpt``, see
        :data:`PUBLISHED_BACKBONES`), else it keeps the constructor's default unless given.

        Args:
            path: The local checkpoint file.
            **kwargs: Constructor arguments; a ``feature_channels`` other than the file's
                is refused.

        Returns:
            The stack with the published weights, in training mode as a new module is.

        Raises:
            FileNotFoundError: No such file (the message says where to download one).
            CheckpointReadError: The file cannot be read.
            CheckpointMismatchError: The file holds no FeatUp JBU upsampler, one for another
                feature width, or keys that do not fit; the message says what it holds.
        """
        name = os.fspath(path)
        state = read_state_dict(
            name,
            what='FeatUp JBU checkpoint',
            valid=_VALID_CHECKPOINT,
            where_to_get=_WHERE_TO_GET,
            entry='state_dict',
        )
        weights = {
            key[len(CHECKPOINT_PREFIX) :]: value
            for key, value in state.items()
            if isinstance(key, str) and key.startswith(CHECKPOINT_PREFIX)
        }
        channels = _channels_of(weights)
        requested = kwargs.get('feature_channels')
        if not weights or channels is None:
            raise CheckpointMismatchError(
                f'{name!r} is not a FeatUp JBU checkpoint: {_what_it_holds(state)}. Expected '
                f'{_VALID_CHECKPOINT}, for {requested or _DEFAULT_CHANNELS}-channel '
                'features.'
            )
        if requested is not None and requested != channels:
            raise CheckpointMismatchError(
                f'{name!r} holds a FeatUp JBU checkpoint for {channels}-channel features'
                f'{_backbones_of(channels)}, but {requested}-channel features were asked for. '
                f'Use the checkpoint of your backbone ({_WHERE_TO_GET})'
            )
        kwargs['feature_channels'] = channels
        backbone = _published_backbone(name)
        if backbone is not None:
            kwargs.setdefault('patch_size', PUBLISHED_BACKBONES[backbone][1])
        model = cls(**kwargs)
        check_state_dict_fits(
            weights,
            model.state_dict(),
            source=f'FeatUp JBU checkpoint {name!r} (keys under {CHECKPOINT_PREFIX!r})',
            target=f'FeatUpJBU(feature_channels={channels})',
        )
        model.load_state_dict(weights, strict=True)
        if 'model.1.norm.weight' in state:
            logger.info(
                '%s also holds a channel LayerNorm (model.1.norm.*), which FeatUp applies to '
                'the backbone features before this upsampler in its checkpoints outside '
                'no_norm/; FeatUpJBU upsamples the features as they are given.',
                name,
            )
        return model


def _channels_of(weights: Mapping[str, Any]) -> int | None:
    """The feature width of FeatUp JBU weights (the final 1 x 1 convolution's output)."""
    final = weights.get('fixup_proj.1.weight')
    return int(final.shape[0]) if isinstance(final, Tensor) and final.dim() == 4 else None


def _backbones_of(channels: int) -> str:
    names = [name for name, (width, _) in PUBLISHED_BACKBONES.items() if width == channels]
    return f" (FeatUp's {', '.join(names)} release)" if names else ''


def _published_backbone(path: str) -> str | None:
    match = _PUBLISHED_FILE.match(os.path.basename(path))
    if match and match.group(1) in PUBLISHED_BACKBONES:
        return match.group(1)
    return None


def _what_it_holds(state: Mapping[str, Any]) -> str:
    """What ``state`` holds: FeatUp JBU weights without the published prefix, or see
    :func:`~.registry.describe_checkpoint`.
    """
    bare = tuple(k[len(CHECKPOINT_PREFIX) :] for k in FeatUpJBU.checkpoint_keys_hint)
    where = locate_keys(state, bare)
    if where is not None and not where[1].endswith(CHECKPOINT_PREFIX):
        return (
            f'this holds FeatUp JBU weights without the {CHECKPOINT_PREFIX!r} prefix of the '
            f"published files (save them as {{'state_dict': {{'{CHECKPOINT_PREFIX}' + key: "
            'value}})'
        )
    return describe_checkpoint(state, FeatUpJBU.name)
