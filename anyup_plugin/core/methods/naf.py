"""NAF: zero-shot feature upsampling by neighbourhood attention filtering (Chambon et al., 2025).

The published model (github.com/valeoai/NAF, ``src/model/naf.py``), encoder-agnostic: the image
alone makes the attention weights, which filter the features of any backbone.

1. Two convolutional image encoders (1x1 and 3x3 kernels, reflect padding, GroupNorm + SiLU
   blocks without residual) run on the image, first resized to at most 4x the output size;
   their outputs are concatenated and average-pooled to the output size.
2. Axial RoPE (no weights, a ``periods`` buffer) rotates that map per head; the result is the
   queries, and its average pool to the feature size the keys.
3. Per head, each output pixel attends over a ``kernel_size`` x ``kernel_size`` neighbourhood
   (:mod:`.neighborhood_attention`, NATTEN's definition) of the keys and the features,
   nearest-exact upsampled to the output size, with dilation ``output // features`` per axis.
   The features are the values: the output is a convex combination of input features.

The published code runs NATTEN; this runs the same attention in PyTorch, in bounded chunks of
queries (``max_query_chunk``), reading the keys and values on their own low-resolution grid.
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checkpoints import CheckpointMismatchError, check_state_dict_fits
from .base import (
    Size,
    UpsamplingMethod,
    WrongFeaturesError,
    positive_output_size,
    read_state_dict,
)
from .neighborhood_attention import (
    DEFAULT_MAX_QUERY_CHUNK,
    nearest_exact_source,
    neighborhood_attention_2d,
)
from .registry import describe_checkpoint

__all__ = ['NAF']

#: The published weights (``hubconf.py`` of github.com/valeoai/NAF).
NAF_CHECKPOINT_URL = 'https://github.com/valeoai/NAF/releases/download/model/naf_release.pth'


class _EncoderBlock(nn.Module):
    """GroupNorm, SiLU, conv, GroupNorm, SiLU, conv (the published ``EncBlock``, no residual)."""

    def __init__(self, channels: int, kernel_size: int, num_groups: int) -> None:
        super().__init__()
        padding = kernel_size // 2
        self.norm1 = nn.GroupNorm(num_groups, channels)
        self.conv1 = nn.Conv2d(
            channels, channels, kernel_size, padding=padding, padding_mode='reflect'
        )
        self.norm2 = nn.GroupNorm(num_groups, channels)
        self.conv2 = nn.Conv2d(
            channels, channels, kernel_size, padding=padding, padding_mode='reflect'
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(F.silu(self.norm1(x)))
        return self.conv2(F.silu(self.norm2(x)))


def _conv_encoder(
    in_channels: int, channels: int, kernel_size: int, num_layers: int, num_groups: int = 8
) -> nn.Sequential:
    stem = nn.Conv2d(
        in_channels, channels, kernel_size, padding=kernel_size // 2, padding_mode='reflect'
    )
    blocks = [_EncoderBlock(channels, kernel_size, num_groups) for _ in range(num_layers)]
    return nn.Sequential(stem, *blocks)


class NAFRoPE(nn.Module):
    """Axial rotary position embedding of a (B, dim, h, w) map, per head (DINOv3's RoPE).

    Coordinates are cell centres in [-1, 1] per axis. In each head of ``D = dim / heads``
    channels, channel ``c < D / 2`` pairs with ``c + D / 2`` and turns by
    ``2 pi * coordinate / periods[c % (D / 4)]``, the row coordinate for ``c % (D / 2) < D / 4``
    and the column coordinate otherwise.

    Args:
        dim: Channels (a multiple of ``4 * heads``).
        heads: RoPE heads.
        base: ``periods = base ** (2 * arange(D / 4) / (D / 2))``.
        rescale_coords: In training only, coordinates are scaled by one log-uniform factor in
            [1 / rescale_coords, rescale_coords] per call (``None``: never). The published
            code draws it once per map size and keeps it in its coordinate cache, in
            evaluation too; here evaluation never rescales (the published behaviour of a model
            that has not been trained at that size, as the released one is loaded).
    """

    def __init__(
        self, dim: int, heads: int, base: float = 100.0, rescale_coords: float | None = None
    ) -> None:
        super().__init__()
        if dim % (4 * heads):
            raise ValueError(f'RoPE needs dim divisible by 4 x heads, got {dim} and {heads} heads')
        self.heads = heads
        self.rescale_coords = rescale_coords
        quarter = dim // heads // 4
        self.register_buffer('periods', base ** (2 * torch.arange(quarter) / (2 * quarter)))

    def _angles(self, length: int, like: Tensor, rescale: Tensor | None) -> Tensor:
        coords = (
            2.0 * (torch.arange(0.5, length, dtype=like.dtype, device=like.device) / length) - 1.0
        )
        if rescale is not None:
            coords = coords * rescale
        # (D/4, length): the order of operations of the published code.
        return 2 * math.pi * coords[None, :] / self.periods.to(like.dtype)[:, None]

    def forward(self, x: Tensor) -> Tensor:
        """(B, dim, h, w) -> (B, dim, h, w) rotated."""
        b, dim, h, w = x.shape
        rescale = None
        if self.training and self.rescale_coords is not None:
            log_max = math.log(self.rescale_coords)
            rescale = (
                torch.empty(1, dtype=x.dtype, device=x.device).uniform_(-log_max, log_max).exp()
            )
        rows = self._angles(h, x, rescale)[:, :, None]  # (D/4, h, 1)
        cols = self._angles(w, x, rescale)[:, None, :]  # (D/4, 1, w)
        # (B, heads, pair half, axis, D/4, h, w); the result is written in place of a new
        # tensor so that the full-size temporaries are one product at a time.
        x = x.reshape(b, self.heads, 2, 2, -1, h, w)
        rotated = torch.empty_like(x)
        for axis, angles in ((0, rows), (1, cols)):
            cos, sin = angles.cos(), angles.sin()
            first, second = x[:, :, 0, axis], x[:, :, 1, axis]
            rotated[:, :, 0, axis] = first * cos - second * sin
            rotated[:, :, 1, axis] = second * cos + first * sin
        return rotated.view(b, dim, h, w)


class _ImageEncoder(nn.Module):
    """The image to the queries' map (B, dim, H', W'): two conv encoders, pooled, RoPE."""

    def __init__(
        self,
        dim: int,
        heads_rope: int,
        rope_base: float,
        rope_rescale: float | None,
        img_layers: int,
    ) -> None:
        super().__init__()
        self.encoder = _conv_encoder(3, dim // 2, 1, img_layers)
        self.sem_encoder = _conv_encoder(3, dim // 2, 3, img_layers)
        self.rope = NAFRoPE(dim, heads_rope, base=rope_base, rescale_coords=rope_rescale)

    def forward(self, image: Tensor, output_size: Size) -> Tensor:
        oh, ow = output_size
        h, w = image.shape[-2:]
        if h > 4 * oh or w > 4 * ow:
            # The published bound, each side capped by 4x both output sides.
            size = (min(h, 4 * oh, 4 * ow), min(w, 4 * ow, 4 * oh))
            image = F.interpolate(image, size=size, mode='bilinear', align_corners=False)
        # Pooling is per channel, so each branch is pooled before the concatenation (the same
        # numbers): the image-size maps of the two branches are never held together.
        pooled = [F.adaptive_avg_pool2d(branch(image), output_size) for branch in self.branches()]
        return self.rope(torch.cat(pooled, dim=1))

    def branches(self) -> tuple[nn.Module, nn.Module]:
        """The two encoders, in the published concatenation order."""
        return self.encoder, self.sem_encoder


class NAF(UpsamplingMethod):
    """NAF, the published architecture and key names (``naf_release.pth`` loads strictly).

    Encoder-agnostic: any channel count divisible by ``heads_attn`` and any patch size. The
    output must be at least the feature size on each axis, and at least ``kernel_size`` times
    ``output // features`` (NATTEN's window must fit): any output at least the feature size
    when the features have at least ``kernel_size`` cells per side, some sizes otherwise
    (:meth:`check_output_size` names them).

    Args:
        dim: Channels of the image encoding (queries and keys).
        heads_attn: Attention heads; the features are split into as many channel groups.
        heads_rope: RoPE heads.
        kernel_size: Neighbourhood size (odd) on the output grid, before dilation.
        rope_base: RoPE base period.
        rope_rescale: Training-time RoPE coordinate scaling (see :class:`NAFRoPE`).
        img_layers: Blocks per image encoder.
        max_query_chunk: Output pixels (over the batch) attended per step: bounds the memory.
    """

    name = 'naf'
    uses_image = True
    checkpoint_keys_hint = (
        'image_encoder.sem_encoder.0.weight',
        'image_encoder.rope.periods',
    )
    feature_channels = None
    patch_size = None

    def __init__(
        self,
        dim: int = 256,
        heads_attn: int = 4,
        heads_rope: int = 4,
        kernel_size: int = 9,
        rope_base: float = 100.0,
        rope_rescale: float | None = 2.0,
        img_layers: int = 2,
        max_query_chunk: int = DEFAULT_MAX_QUERY_CHUNK,
    ) -> None:
        super().__init__()
        if dim % heads_attn:
            raise ValueError(f'dim ({dim}) must be divisible by heads_attn ({heads_attn})')
        if kernel_size < 3 or kernel_size % 2 == 0:
            raise ValueError(f'kernel_size must be odd and at least 3, got {kernel_size}')
        self.heads_attn = heads_attn
        self.kernel_size = kernel_size
        self.max_query_chunk = max_query_chunk
        self.image_encoder = _ImageEncoder(dim, heads_rope, rope_base, rope_rescale, img_layers)

    def check_features(self, image: Tensor | None, features: Tensor) -> None:
        """Refuses a channel count that the attention heads cannot split evenly."""
        if features.shape[1] % self.heads_attn:
            raise WrongFeaturesError(
                f'NAF splits the features into {self.heads_attn} attention heads: the channel '
                f'count must be a multiple of {self.heads_attn}, got {features.shape[1]} '
                f'(features of shape {tuple(features.shape)}). Pad the channels with zeros '
                'to the next multiple and drop them after upsampling.'
            )

    def check_output_size(self, feature_size: Size, output_size: Size) -> None:
        """Raises ``ValueError`` for an output NAF cannot make, saying which ones it can.

        On an axis of ``f`` feature cells, output ``o`` needs ``o >= f`` (the dilation
        ``o // f`` is at least 1) and ``o >= kernel_size * (o // f)`` (NATTEN's window fits):
        always true for ``f >= kernel_size``; for fewer cells only up to a largest ``o``.
        """
        k = self.kernel_size
        for axis, f, o in zip(('height', 'width'), feature_size, output_size):
            if o < f:
                raise ValueError(
                    f'NAF only upsamples: output {axis} {o} is smaller than the feature {axis} '
                    f'{f}. Ask for at least {f} and downsample the result (e.g. '
                    'F.adaptive_avg_pool2d), or use bilinear.'
                )
            if o < k * (o // f):
                ranges = ', '.join(
                    f'{lo}-{hi}' if hi > lo else f'{lo}' for lo, hi in _output_ranges(f, k)
                )
                can = (
                    f'from {f} cells it makes {ranges}'
                    if ranges
                    else f'it makes none from {f} cells'
                )
                raise ValueError(
                    f'NAF cannot make output {axis} {o} from {f} feature cells: its {k}-cell '
                    f'neighbourhood, dilated {o // f}x, needs at least {k * (o // f)} output '
                    f"cells (NATTEN's condition); {can}. Features of at least {k} cells per "
                    'side take any output size at least their own (e.g. bilinearly resize '
                    f'the features to {k} cells first), or use another method.'
                )

    def forward(self, image: Tensor | None, features: Tensor, output_size: Size) -> Tensor:
        """Upsamples features guided by the image.

        Args:
            image: (B, 3, H, W) ImageNet-normalised RGB.
            features: (B, C, h, w), C a multiple of ``heads_attn``.
            output_size: (H', W'), at least (h, w) and at least ``kernel_size`` times
                ``(H' // h, W' // w)``.

        Returns:
            (B, C, H', W') in the dtype of the image encoder's weights.
        """
        if image is None:
            raise ValueError('NAF needs the image: its attention weights come from it alone')
        output_size = positive_output_size(
            output_size, "NAF takes an output size (H', W') of two positive integers"
        )
        self.check_features(image, features)
        (hk, wk), (hq, wq) = features.shape[-2:], output_size
        self.check_output_size((hk, wk), output_size)

        x = self.image_encoder(image, output_size)  # (B, dim, H', W')
        keys = F.adaptive_avg_pool2d(x, (hk, wk))
        b, dim = x.shape[:2]
        n = self.heads_attn
        out = neighborhood_attention_2d(
            x.view(b, n, dim // n, hq, wq),
            keys.view(b, n, dim // n, hk, wk),
            features.to(x.dtype).reshape(b, n, -1, hk, wk),
            self.kernel_size,
            (hq // hk, wq // wk),
            scale=(dim // n) ** -0.5,
            key_rows=nearest_exact_source(hq, hk),
            key_cols=nearest_exact_source(wq, wk),
            max_query_chunk=self.max_query_chunk,
        )
        return out.reshape(b, -1, hq, wq)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, **kwargs: Any) -> NAF:
        """Builds NAF from the published ``naf_release.pth`` (a plain state dict).

        ``dim``, ``heads_rope`` and ``img_layers`` are read from the file; ``heads_attn`` and
        ``kernel_size`` (no weights of their own) keep the published 4 and 9 unless given.

        Raises:
            FileNotFoundError: No file at ``path``; the message gives the download address.
            CheckpointReadError: The file is not a readable checkpoint.
            CheckpointMismatchError: The file holds another model's weights; the message says
                what it holds.
        """
        state = read_state_dict(
            path,
            'NAF checkpoint',
            'the published naf_release.pth, a state dict saved by torch.save',
            f'Download the published weights from {NAF_CHECKPOINT_URL} and pass the local '
            'path (nothing is downloaded here).',
        )
        config = {**_infer_config(state, path), **kwargs}
        model = cls(**config)
        check_state_dict_fits(state, model.state_dict(), f'checkpoint {os.fspath(path)!r}', 'NAF')
        model.load_state_dict(state, strict=True)
        return model


def _output_ranges(cells: int, kernel_size: int) -> list[tuple[int, int]]:
    """The output sizes NAF makes from ``cells < kernel_size`` feature cells, as ranges.

    Output ``o = cells * d + r`` (``0 <= r < cells``, dilation ``d``) needs
    ``o >= kernel_size * d``, which leaves ``[kernel_size * d, cells * d + cells - 1]`` for
    each ``d`` up to ``(cells - 1) / (kernel_size - cells)``.
    """
    top = (cells - 1) // (kernel_size - cells)
    return [(kernel_size * d, cells * d + cells - 1) for d in range(1, top + 1)]


def _infer_config(state: dict[str, Any], path: str | os.PathLike) -> dict[str, Any]:
    """NAF's shape arguments read off a state dict, or an error saying what the file holds."""
    stem, periods = (
        state.get('image_encoder.encoder.0.weight'),
        state.get('image_encoder.rope.periods'),
    )
    if not isinstance(stem, Tensor) or not isinstance(periods, Tensor):
        if any(isinstance(state.get(k), Tensor) for k in NAF.checkpoint_keys_hint):
            return {}  # NAF's keys with some missing: the mismatch check names them
        raise CheckpointMismatchError(
            f'checkpoint {os.fspath(path)!r} is not a NAF checkpoint: '
            f'{describe_checkpoint(state, NAF.name)}. '
            f'Expected NAF keys such as {", ".join(NAF.checkpoint_keys_hint)} (the published '
            f'{NAF_CHECKPOINT_URL}).'
        )
    dim = 2 * stem.shape[0]
    layers = sorted(
        {
            int(k.split('.')[2])
            for k in state
            if k.startswith('image_encoder.encoder.') and k.split('.')[2].isdigit()
        }
    )
    return {
        'dim': dim,
        'heads_rope': dim // (4 * periods.shape[0]),
        'img_layers': len(layers) - 1,
    }
