"""LoftUp (Huang et al., 2025): a coordinate-based upsampler trained per backbone.

Every output pixel is a query built from the image's Fourier features (coordinates and
colours, two 3x3 convolutions), which cross-attends to all feature tokens (the features with
sine encodings of their positions). The published module is quadratic in pixels; here queries
are attended in chunks and the image branch runs in bands of rows, exactly
(:mod:`.loftup_layers`).

The released weights (one file per backbone, ``pytorch_model.bin`` on the Hugging Face hub,
loaded by the published ``torch.hub`` entry points) are a plain state dict of the published
``UpsamplerwithChannelNorm``: ``upsampler.*`` (the network) and ``channelnorm.norm.*`` (a
LayerNorm of the input features). :meth:`LoftUp.from_checkpoint` loads exactly that, strictly.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor

from ..checkpoints import (
    CheckpointMismatchError,
    state_dict_mismatch,
)
from .base import Size, UpsamplingMethod, positive_output_size, read_state_dict
from .loftup_layers import ChannelNorm, LoftUpNetwork, fourier_dtype
from .registry import describe_checkpoint, locate_keys

__all__ = ['LOFTUP_RELEASES', 'LoftUp']

logger = logging.getLogger(__name__)

#: Feature channels -> (backbones of the released checkpoints, their patch size, the Hugging
#: Face repository of the first). :meth:`LoftUp.from_checkpoint` takes the patch size from here.
LOFTUP_RELEASES: dict[int, tuple[str, int, str]] = {
    384: ('DINOv2 ViT-S/14 (with or without registers)', 14, 'haiwen/loftup-dinov2s'),
    512: ('CLIP ViT-B/16', 16, 'haiwen/loftup-clip'),
    768: (
        'DINOv2 ViT-B/14 (with or without registers); SigLIP and SigLIP2 ViT-B/16 (pass '
        'patch_size=16)',
        14,
        'haiwen/loftup-dinov2b',
    ),
}

_WHERE_TO_GET = (
    'The released LoftUp weights are the pytorch_model.bin files of the Hugging Face '
    'repositories listed at https://huggingface.co/models?search=loftup (DINOv2 ViT-S/14: '
    'https://huggingface.co/haiwen/loftup-dinov2s/resolve/main/pytorch_model.bin); download '
    'the one for your backbone and pass its local path (nothing is downloaded for you).'
)
_VALID = (
    "a state dict saved by torch.save with keys 'upsampler.*' and 'channelnorm.norm.*' "
    '(the released pytorch_model.bin)'
)
_LAYER_KEY = re.compile(r'^upsampler\.ca_transformer\.layers\.(\d+)\.')


class LoftUp(UpsamplingMethod):
    """LoftUp for one backbone: features of ``feature_channels`` to any output size.

    The output size is the guidance image's: an image of another size is resized to it
    bilinearly first (as the published example does). As published, the colour scaling of the
    image branch takes its minimum and maximum over the whole batch, so batching images
    changes their results slightly. All released checkpoints encode feature positions with
    sines (the published ``lr_pe_type='sine'``), the only variant implemented.

    Args:
        feature_channels: Channels of the backbone's features (384: DINOv2 ViT-S/14).
        patch_size: The backbone's patch size (pixels per feature cell).
        n_freqs: Frequencies of the image's Fourier features.
        num_heads: Attention heads (they divide ``feature_channels + 20``).
        num_layers: Cross-attention layers.
        max_query_chunk: Output pixels per image attended at once; the image branch runs in
            bands of rows holding at least that many (and at least 16 rows). ``None``: the
            whole map at once, as published. Results do not depend on it. Where attention
            scores are materialised (float64, or a backend without a fused kernel) a chunk
            holds ``B * max_query_chunk * h * w * num_heads`` of them: the default's 8192
            queries against 73 x 73 features take 0.7 GB in float32 per image, beside the
            output itself (1.5 GiB for 384 x 1024 x 1024) and a band of about 20 x 1024
            pixels of 404 channels. Measured on the CPU in float32 (fused attention), rows of
            a 1024-pixel-wide output from 73 x 73 features take 0.45 GiB beside the output;
            a 448 x 448 output from 32 x 32 features 0.5 GiB in all (1.8 GiB with ``None``).

    Attributes:
        upsampler: The network (:class:`~.loftup_layers.LoftUpNetwork`).
        channelnorm: The LayerNorm applied to the input features first.
    """

    name: ClassVar[str] = 'loftup'
    uses_image: ClassVar[bool] = True
    checkpoint_keys_hint: ClassVar[tuple[str, ...]] = (
        'upsampler.fourier_feat.1.biases',
        'upsampler.ca_transformer.norm.weight',
        'channelnorm.norm.weight',
    )

    def __init__(
        self,
        feature_channels: int = 384,
        patch_size: int = 14,
        n_freqs: int = 20,
        num_heads: int = 4,
        num_layers: int = 2,
        max_query_chunk: int | None = 8192,
    ) -> None:
        super().__init__()
        if max_query_chunk is not None and max_query_chunk < 1:
            raise ValueError(f'max_query_chunk must be positive or None, got {max_query_chunk}')
        self.feature_channels = feature_channels
        self.patch_size = patch_size
        self.max_query_chunk = max_query_chunk
        self.upsampler = LoftUpNetwork(feature_channels, n_freqs, num_heads, num_layers)
        self.channelnorm = ChannelNorm(feature_channels)

    def forward(self, image: Tensor | None, features: Tensor, output_size: Size) -> Tensor:
        """Upsamples one map.

        Args:
            image: (B, 3, H, W) ImageNet-normalised RGB.
            features: (B, feature_channels, H // patch_size, W // patch_size).
            output_size: (H', W'), any positive size.

        Returns:
            (B, feature_channels, H', W') in the features' dtype.

        Raises:
            ValueError: No image, or an output size that is not positive.
            WrongFeaturesError: Features of another channel count or patch size.
        """
        if image is None:
            raise ValueError('LoftUp needs the image: its queries are built from its pixels')
        size = positive_output_size(
            output_size, "LoftUp produces outputs of any positive size (H', W'), two integers"
        )
        self.check_features(image, features)
        # Resizing and the Fourier features run in float64 where available: their highest
        # frequency (e^10) turns float32 rounding of pixel values into visible phase errors.
        guide = image.to(fourier_dtype(image.device, features.dtype))
        if tuple(guide.shape[-2:]) != size:
            guide = F.interpolate(guide, size=size, mode='bilinear', align_corners=False)
        return self.upsampler(self.channelnorm(features), guide, self.max_query_chunk)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, **kwargs: Any) -> LoftUp:
        """Builds LoftUp from a released ``pytorch_model.bin`` (strictly, published key names).

        ``feature_channels``, ``num_layers`` and ``n_freqs`` are read from the file;
        ``patch_size`` defaults to that of the release with this channel count
        (:data:`LOFTUP_RELEASES`; pass ``patch_size=16`` for the SigLIP releases).

        Args:
            path: The local checkpoint file.
            **kwargs: Constructor arguments; given ``feature_channels`` must match the file.

        Raises:
            FileNotFoundError: No such file; the message says where to download the weights.
            CheckpointReadError: The file is not a readable checkpoint.
            CheckpointMismatchError: The file holds another method's or backbone's weights.
        """
        state_dict = read_state_dict(path, 'LoftUp checkpoint', _VALID, _WHERE_TO_GET)
        source = f'checkpoint {os.fspath(path)!r}'
        held = _loftup_channels(state_dict)
        expected = kwargs.get('feature_channels')
        if held is not None and expected is not None and held != expected:
            raise CheckpointMismatchError(
                f'{source} holds a LoftUp checkpoint for {held}-channel features '
                f'({_release_name(held)}); expected one for {expected}-channel features '
                f'({_release_name(expected)}). {_WHERE_TO_GET}'
            )
        if held is not None:
            kwargs.setdefault('feature_channels', held)
            if held in LOFTUP_RELEASES:
                kwargs.setdefault('patch_size', LOFTUP_RELEASES[held][1])
            layers = {int(m.group(1)) for k in state_dict if (m := _LAYER_KEY.match(k))}
            if layers:
                kwargs.setdefault('num_layers', max(layers) + 1)
            biases = state_dict.get('upsampler.fourier_feat.1.biases')
            if isinstance(biases, Tensor) and biases.dim() == 3:
                kwargs.setdefault('n_freqs', int(biases.shape[-1]))
        model = cls(**kwargs)
        mismatch = state_dict_mismatch(state_dict, model.state_dict())
        if mismatch:
            raise CheckpointMismatchError(
                f'{source} cannot be loaded: {_describe_foreign(state_dict)}; expected a LoftUp '
                f'checkpoint for {model.feature_channels}-channel features ({_VALID}). '
                f'{_WHERE_TO_GET} Details: ' + mismatch.describe(source, 'LoftUp')
            )
        model.load_state_dict(state_dict, strict=True)
        logger.info('LoftUp: loaded %s', source)
        return model


def _loftup_channels(state_dict: Mapping[str, Any]) -> int | None:
    """The feature channels of a LoftUp state dict (``None``: not one)."""
    value = state_dict.get('channelnorm.norm.weight')
    if 'upsampler.ca_transformer.norm.weight' not in state_dict or not isinstance(value, Tensor):
        return None
    return int(value.shape[0])


def _release_name(channels: int) -> str:
    release = LOFTUP_RELEASES.get(channels)
    return release[0] if release else 'no released LoftUp checkpoint'


def _describe_foreign(state_dict: Mapping[str, Any]) -> str:
    """What a checkpoint that does not fit LoftUp holds, as far as its keys tell.

    LoftUp's own network in another layout than the released file's is named here; other
    methods' checkpoints by :func:`~.registry.describe_checkpoint`.
    """
    network_keys = LoftUp.checkpoint_keys_hint[:2]
    if locate_keys(state_dict, network_keys) is not None:
        return (
            'this holds LoftUp weights in a training checkpoint (not the released '
            'pytorch_model.bin layout)'
        )
    bare = tuple(k.removeprefix('upsampler.') for k in network_keys)
    if locate_keys(state_dict, bare) is not None:
        return (
            "this holds LoftUp's network alone, without the feature LayerNorm "
            "'channelnorm.norm.*' (as Hugging Face model.safetensors files are); use the "
            'pytorch_model.bin of the same repository'
        )
    return describe_checkpoint(state_dict, LoftUp.name)
