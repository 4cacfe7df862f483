"""JAFAR (Couairon et al., 2025): attention from image-derived queries to feature tokens.

The published model (github.com/PaulCouairon/JAFAR, ``src/upsampler/jafar.py``) encodes the
image at its own resolution with 1x1 convolutions and residual blocks, rotates the encoding
with a learned 2-D RoPE, and derives from it

* queries: a second encoder, average-pooled to the output size, group-normalised and passed
  through a 3x3 convolution;
* keys: a third encoder, average-pooled to the feature map's size, modulated (SFT: a scale and
  a shift) by an encoding of the L2-normalised features.

Every output pixel attends to every feature token (multi-head, RMS-normalised queries and
keys); the attention weights averaged over the heads mix the *unmodified* features, so the
published ``nn.MultiheadAttention``'s value and output projections and the value RMSNorm are
trained nowhere and used nowhere. They stay here as parameters only so that the published
checkpoints load strictly under their own key names.

Memory: the published form holds the (B, heads, H'W', hw) attention scores and their softmax
at once (a 170 GiB peak in float32 for a 1024x1024 output from 73x73 features); here queries
are processed ``max_query_chunk`` at a time, which gives the same result (each query's
attention is independent of the others) within a 3.3 GiB peak, 1.5 GiB of it the output
(live tensors counted on the meta device, batch 1, the default chunk).
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...constants import IMAGENET_MEAN, IMAGENET_STD
from ..checkpoints import CheckpointMismatchError, check_state_dict_fits
from .base import Size, UpsamplingMethod, load_tensors, positive_output_size, read_state_dict
from .jafar_layers import CrossAttentionBlock, RoPE2d, SFTModulation, make_encoder
from .registry import describe_checkpoint

__all__ = ['JAFAR', 'JAFAR_WEIGHTS_URL']

logger = logging.getLogger(__name__)

#: Where the published weights are listed (one file per backbone).
JAFAR_WEIGHTS_URL = 'https://github.com/PaulCouairon/JAFAR#-available-models'
_DINOV2_S14_URL = (
    'https://github.com/PaulCouairon/JAFAR/releases/download/Weights/'
    'vit_small_patch14_dinov2.lvd142m.pth'
)
# The entry JAFAR's train.py stores the model's state dict under (beside the optimizer state,
# the epoch and the Hydra config).
_CHECKPOINT_ENTRY = 'jafar'


class JAFAR(UpsamplingMethod):
    """JAFAR feature upsampler (published architecture and parameter names).

    Trained per backbone: the defaults are the published release for DINOv2 ViT-S/14.

    Args:
        feature_channels: Channels of the backbone features (``v_dim`` of the published code).
        patch_size: The backbone's patch size (only checked, see
            :meth:`~anyup_plugin.core.methods.base.UpsamplingMethod.check_features`).
        qk_dim: Query and key channels.
        num_heads: Attention heads.
        input_dim: Image channels.
        kernel_size: Kernel of the image encoder's first convolution.
        max_query_chunk: Output pixels attended at once; bounds the attention's memory to
            about ``2 * B * num_heads * max_query_chunk * h * w`` elements, its scores and
            their softmax (0.65 GiB in float32 for 73x73 features at batch 1 by default). The
            result does not depend on it.
        image_mean: The mean the weights' image normalisation used (JAFAR normalises the image
            as its backbone does: ImageNet statistics for DINOv2). The image given to
            :meth:`forward` is ImageNet-normalised and converted when these differ.
        image_std: The standard deviation of that normalisation.
    """

    name: ClassVar[str] = 'jafar'
    uses_image: ClassVar[bool] = True
    checkpoint_keys_hint: ClassVar[tuple[str, ...]] = (
        'key_features_encoder.0.weight',
        'sft_key.gamma.weight',
        'cross_decode.conv2d.weight',
    )

    def __init__(
        self,
        feature_channels: int = 384,
        patch_size: int | None = 14,
        qk_dim: int = 128,
        num_heads: int = 4,
        input_dim: int = 3,
        kernel_size: int = 1,
        max_query_chunk: int = 4096,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        if max_query_chunk < 1:
            raise ValueError(f'max_query_chunk must be at least 1, got {max_query_chunk}')
        if qk_dim % 8 or qk_dim % num_heads:
            raise ValueError(
                f'qk_dim must be a multiple of 8 (GroupNorm groups and RoPE pairs) and of '
                f'num_heads, got qk_dim={qk_dim}, num_heads={num_heads}'
            )
        self.feature_channels = int(feature_channels)
        self.patch_size = patch_size
        self.max_query_chunk = int(max_query_chunk)
        self.image_mean = tuple(float(m) for m in image_mean)
        self.image_std = tuple(float(s) for s in image_std)

        self.image_encoder = make_encoder(input_dim, qk_dim, kernel_size=kernel_size)
        self.key_encoder = make_encoder(qk_dim, qk_dim)
        self.query_encoder = make_encoder(qk_dim, qk_dim)
        self.norm = nn.GroupNorm(8, qk_dim, affine=False)
        self.key_features_encoder = make_encoder(self.feature_channels, qk_dim)
        self.cross_decode = CrossAttentionBlock(qk_dim, self.feature_channels, num_heads)
        self.sft_key = SFTModulation(qk_dim)
        self.rope = RoPE2d(qk_dim)

    def _published_normalisation(self, image: Tensor) -> Tensor:
        if (self.image_mean, self.image_std) == (tuple(IMAGENET_MEAN), tuple(IMAGENET_STD)):
            return image

        def column(values: Sequence[float]) -> Tensor:
            return torch.tensor(values, dtype=image.dtype, device=image.device).view(1, -1, 1, 1)

        rgb = image * column(IMAGENET_STD) + column(IMAGENET_MEAN)
        return (rgb - column(self.image_mean)) / column(self.image_std)

    def forward(self, image: Tensor | None, features: Tensor, output_size: Size) -> Tensor:
        """Upsamples one map.

        Args:
            image: (B, 3, H, W) ImageNet-normalised RGB, H and W ``patch_size`` times h and w.
            features: (B, C, h, w) backbone features, C = ``feature_channels``.
            output_size: (H', W'), any positive size; the queries are the image encoding
                average-pooled to it, so sizes beyond (H, W) repeat image pixels.

        Returns:
            (B, C, H', W') upsampled features.

        Raises:
            WrongFeaturesError: Features of another channel count or patch size.
            ValueError: No image, or an output size that is not two positive integers.
        """
        if image is None:
            raise ValueError('JAFAR needs the image: its queries and keys are derived from it')
        out_h, out_w = positive_output_size(
            output_size,
            "JAFAR produces any output size (H', W') of two positive integers (queries are the "
            'image encoding average-pooled to it; it is sharpest up to the image size)',
        )
        self.check_features(image, features)
        if image.shape[0] != features.shape[0]:
            raise ValueError(
                f'image batch {image.shape[0]} differs from feature batch {features.shape[0]}'
            )
        encoded = self.rope(self.image_encoder(self._published_normalisation(image)))
        keys = F.adaptive_avg_pool2d(self.key_encoder(encoded), features.shape[-2:])
        keys = self.sft_key(keys, self.key_features_encoder(F.normalize(features, dim=1)))
        queries = self.norm(F.adaptive_avg_pool2d(self.query_encoder(encoded), (out_h, out_w)))
        # The image-sized encoding is not needed past here; free it before the attention.
        del encoded
        return self.cross_decode(queries, keys, features, self.max_query_chunk)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, **kwargs: Any) -> JAFAR:
        """Builds JAFAR from a published checkpoint file, loaded strictly.

        The published files are what JAFAR's ``train.py`` saves: a dict whose ``'jafar'``
        entry is the model's state dict; a plain state dict is accepted too. The channel
        count, ``qk_dim``, ``input_dim`` and ``kernel_size`` are read from the tensor shapes;
        ``patch_size`` (14) and ``num_heads`` (4) cannot be, pass them for other backbones.

        Args:
            path: The local file (nothing is downloaded).
            **kwargs: Constructor arguments; ones the file contradicts raise.

        Returns:
            The model, in eval mode.

        Raises:
            FileNotFoundError: No such file; the message says where to download it.
            CheckpointReadError: The file cannot be read with ``weights_only=True``.
            CheckpointMismatchError: The file holds another method's weights, or JAFAR weights
                for other features than ``kwargs`` ask for.
        """
        name = os.fspath(path)
        state = read_state_dict(
            name,
            what='JAFAR checkpoint',
            valid=(
                "the file JAFAR's train.py saves (a dict with the state dict under 'jafar') or "
                'a plain JAFAR state dict, holding tensors and plain containers only '
                '(torch.load(weights_only=True))'
            ),
            where_to_get=(
                f'Download the published JAFAR weights for your backbone (listed at '
                f'{JAFAR_WEIGHTS_URL}; DINOv2 ViT-S/14: {_DINOV2_S14_URL}) and pass the local '
                'path; nothing is downloaded.'
            ),
            entry=_CHECKPOINT_ENTRY,
            load=_load_tensors_only,
        )
        found = _hyper_parameters(state)
        if not found:
            raise CheckpointMismatchError(
                f'checkpoint {name!r} is not a JAFAR checkpoint: '
                f'{describe_checkpoint(state, cls.name)}. Expected the keys '
                f'{", ".join(cls.checkpoint_keys_hint)}, ... of a JAFAR checkpoint.'
            )
        contradicted = {
            k: (kwargs[k], v) for k, v in found.items() if k in kwargs and kwargs[k] != v
        }
        if contradicted:
            asked = ', '.join(f'{k}={want}' for k, (want, _) in contradicted.items())
            raise CheckpointMismatchError(
                f'checkpoint {name!r} holds a JAFAR checkpoint for '
                f'{found["feature_channels"]}-channel features ({_as_kwargs(found)}), but '
                f'{asked} was asked for. Use the JAFAR weights trained for your backbone.'
            )
        model = cls(**{**found, **kwargs})
        check_state_dict_fits(
            state, model.state_dict(), f'checkpoint {name!r}', f'JAFAR({_as_kwargs(found)})'
        )
        model.load_state_dict(state, strict=True)
        logger.info('loaded JAFAR weights from %s (%s)', name, _as_kwargs(found))
        return model.eval()


def _load_tensors_only(path: str) -> Any:
    try:
        return load_tensors(path)
    except pickle.UnpicklingError as exc:
        # JAFAR's train.py pickles its Hydra config beside the weights; unpickling that runs
        # code from the file, which is not done here.
        raise pickle.UnpicklingError(
            f"{exc}\nThe file holds Python objects besides tensors (JAFAR's train.py saves "
            'its Hydra config beside the weights). If you trust the file, extract the weights '
            "once: torch.save(torch.load(path, weights_only=False)['jafar'], 'jafar_weights.pth')"
            ' (needs omegaconf installed) and pass the new file.'
        ) from None


_SHAPE_HINTS: tuple[tuple[str, str, int], ...] = (
    ('key_features_encoder.0.weight', 'feature_channels', 1),
    ('image_encoder.0.weight', 'qk_dim', 0),
    ('image_encoder.0.weight', 'input_dim', 1),
    ('image_encoder.0.weight', 'kernel_size', 2),
)


def _hyper_parameters(state: Mapping[str, Any]) -> dict[str, int]:
    """The constructor arguments a JAFAR state dict's shapes give away; empty if not JAFAR."""
    if not all(isinstance(state.get(k), Tensor) for k in JAFAR.checkpoint_keys_hint):
        return {}
    found = {}
    for key, name, dim in _SHAPE_HINTS:
        tensor = state.get(key)
        if isinstance(tensor, Tensor) and tensor.dim() > dim:
            found[name] = int(tensor.shape[dim])
    return found


def _as_kwargs(values: Mapping[str, Any]) -> str:
    return ', '.join(f'{k}={v}' for k, v in values.items())
