"""The layers of LoftUp (Huang et al., 2025), with the published parameter names.

Kept apart from :mod:`.loftup` (the method, its checkpoints and errors) because the network
alone is long. Module attributes and their order reproduce the published ``LoftUp`` module so
that the released state dicts load strictly; the computation is reorganised only where memory
requires it: the image branch runs in bands of output rows and the cross-attention in chunks of
queries, both exact (each output pixel sees the same inputs as in one pass).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ['CrossAttentionTransformer', 'FourierFeatures', 'LoftUpNetwork', 'fourier_dtype']

#: Rows of the image branch processed together at least (its two 3x3 convolutions recompute
#: two rows on each side of a band, so thin bands would repeat much of the work).
MIN_BAND_ROWS = 16

# The two 3x3 convolutions of the image branch: an output row depends on two rows either side.
_CONV_HALO = 2


def fourier_dtype(device: torch.device, dtype: torch.dtype) -> torch.dtype:
    """The dtype in which the Fourier features are computed on ``device``.

    Their frequencies reach e^10 (about 22026), so float32 rounding of a coordinate or a pixel
    value (about 6e-8 relative) moves the phase of the highest ones by about 1e-3 radian; the
    published code in float32 is about 5e-4 (relative) away from itself in float64 for that
    reason alone. Computing them in float64 and casting the result removes that error; MPS
    has no float64 and keeps the working dtype.
    """
    if device.type == 'mps':
        return dtype
    return torch.float64


class ChannelNorm(nn.Module):
    """``nn.LayerNorm`` over the channels of a (B, C, H, W) map (published key ``norm``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W), each pixel normalised over its C channels."""
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ChannelLayerNorm(nn.Module):
    """The ConvNeXt channel LayerNorm (eps 1e-6) on (B, C, H, W) maps, written out as published."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class MinMaxScaler(nn.Module):
    """Scales each channel to [-0.5, 0.5] by its minimum and maximum over the whole batch.

    As published, the extremes are shared by all images of a batch (an image's result depends
    on the other images it is batched with), and a channel's range is at least 1e-4.
    """

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        low = x.amin(dim=(0, 2, 3), keepdim=True)
        scale = x.amax(dim=(0, 2, 3), keepdim=True) - low
        return (x - low) / scale.clamp_min(1e-4) - 0.5


class FourierFeatures(nn.Module):
    """Sines and cosines of pixel coordinates (and optionally colours) with learned phases.

    Frequencies are ``exp(linspace(-2, 10, n_freqs))``; coordinates run over [-1, 1] along each
    axis of the full map (``linspace``, ij order). The phase table ``biases`` has the published
    shape (2, inputs, n_freqs) and is read, as published, as (n_freqs, inputs) by a reshape.

    Args:
        color_feats: Whether the colour channels are encoded (and appended) too.
        n_freqs: Frequencies per input.
    """

    def __init__(self, color_feats: bool, n_freqs: int) -> None:
        super().__init__()
        self.color_feats = color_feats
        self.n_freqs = n_freqs
        self.inputs = 5 if color_feats else 2
        self.biases = nn.Parameter(torch.randn(2, self.inputs, n_freqs))

    @property
    def out_channels(self) -> int:
        """Channels of :meth:`encode`'s result."""
        return 2 * self.n_freqs * self.inputs + (3 if self.color_feats else 0)

    def encode(self, coords: Tensor, colors: Tensor | None, dtype: torch.dtype) -> Tensor:
        """Encodes coordinates and colours, computing in their dtype and returning ``dtype``.

        Args:
            coords: (B or 1, 2, h, w) row and column coordinates.
            colors: (B, 3, h, w) scaled colours (``color_feats``), else ``None``.
            dtype: The result's dtype.

        Returns:
            (B, 2 * n_freqs * inputs [+ 3], h, w): the sines (frequency-major, then input), the
            cosines in the same order, then the colours themselves.
        """
        inputs = (
            coords if colors is None else torch.cat([coords.expand_as(colors[:, :2]), colors], 1)
        )
        b, _, h, w = inputs.shape
        freqs = torch.exp(
            torch.linspace(-2, 10, self.n_freqs, device=inputs.device, dtype=inputs.dtype)
        )
        phases = inputs.unsqueeze(1) * freqs.reshape(1, -1, 1, 1, 1)
        biases = self.biases.to(inputs.dtype).reshape(2, 1, self.n_freqs, self.inputs, 1, 1)
        sines = torch.sin(phases + biases[0]).reshape(b, -1, h, w)
        cosines = torch.cos(phases + biases[1]).reshape(b, -1, h, w)
        parts = [sines, cosines] if colors is None else [sines, cosines, colors]
        return torch.cat(parts, 1).to(dtype)


def grid_coordinates(
    height: int, width: int, rows: slice, device: torch.device, dtype: torch.dtype
) -> Tensor:
    """(1, 2, len(rows), width): row and column coordinates in [-1, 1] of a full map's rows."""
    grid_h = torch.linspace(-1, 1, height, device=device, dtype=dtype)[rows]
    grid_w = torch.linspace(-1, 1, width, device=device, dtype=dtype)
    return torch.stack(torch.meshgrid(grid_h, grid_w, indexing='ij')).unsqueeze(0)


class FeedForward(nn.Module):
    """Pre-norm MLP (``net``: LayerNorm, Linear, GELU, Dropout, Linear, Dropout)."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(dim),
            nn.Linear(dim, hidden_dim),
            nn.GELU(),
            nn.Dropout(0.0),
            nn.Linear(hidden_dim, dim),
            nn.Dropout(0.0),
        )

    def forward(self, x: Tensor) -> Tensor:
        """(..., dim) -> (..., dim)."""
        return self.net(x)


class CrossAttention(nn.Module):
    """Pre-norm multi-head cross-attention from queries to a fixed set of keys.

    ``attention`` is an ``nn.MultiheadAttention`` kept for its parameters (the published keys
    ``in_proj_weight``, ``in_proj_bias``, ``out_proj``); the keys' projections are computed once
    per map by :meth:`project_keys` and reused by every chunk of queries.
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(embed_dim=dim, num_heads=heads)

    def project_keys(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """(B, N, dim) key/value tokens -> keys and values, each (B, heads, N, dim / heads)."""
        weight = self.attention.in_proj_weight
        bias = self.attention.in_proj_bias
        dim = weight.shape[1]
        normed = self.norm_kv(tokens)
        keys = F.linear(normed, weight[dim : 2 * dim], bias[dim : 2 * dim])
        values = F.linear(normed, weight[2 * dim :], bias[2 * dim :])
        return self._split_heads(keys), self._split_heads(values)

    def _split_heads(self, x: Tensor) -> Tensor:
        b, n, dim = x.shape
        heads = self.attention.num_heads
        return x.reshape(b, n, heads, dim // heads).transpose(1, 2)

    def forward(self, queries: Tensor, keys: Tensor, values: Tensor) -> Tensor:
        """Attends (B, M, dim) queries to :meth:`project_keys`' result; returns (B, M, dim)."""
        weight = self.attention.in_proj_weight
        dim = weight.shape[1]
        q = F.linear(self.norm_q(queries), weight[:dim], self.attention.in_proj_bias[:dim])
        out = F.scaled_dot_product_attention(self._split_heads(q), keys, values)
        out = out.transpose(1, 2).reshape(queries.shape)
        return self.attention.out_proj(out)


class CrossAttentionTransformer(nn.Module):
    """Residual cross-attention and MLP layers, then a LayerNorm (published ``CATransformer``).

    Every query is transformed independently of the others (the keys never change), which is
    what makes chunking the queries exact.
    """

    def __init__(self, dim: int, depth: int, heads: int, mlp_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.layers = nn.ModuleList(
            nn.ModuleList([CrossAttention(dim, heads), FeedForward(dim, mlp_dim)])
            for _ in range(depth)
        )

    def project_keys(self, tokens: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Each layer's keys and values of (B, N, dim) tokens."""
        return [attention.project_keys(tokens) for attention, _ in self.layers]

    def forward(self, queries: Tensor, keys_values: list[tuple[Tensor, Tensor]]) -> Tensor:
        """(B, M, dim) queries and :meth:`project_keys`' result -> (B, M, dim)."""
        for (attention, feed_forward), (keys, values) in zip(self.layers, keys_values):
            queries = attention(queries, keys, values) + queries
            queries = feed_forward(queries) + queries
        return self.norm(queries)


class LoftUpNetwork(nn.Module):
    """The published ``LoftUp`` module with sine positional encodings of the features.

    Queries are the image's Fourier features after two 3x3 convolutions, one per output pixel;
    keys and values are the (channel-normalised) features with sine encodings of their grid
    positions; two cross-attention layers and a 1x1 convolution give the output features.

    Args:
        dim: Feature channels.
        n_freqs: Frequencies of the image's Fourier features.
        num_heads: Attention heads (they divide ``dim + 20``).
        num_layers: Cross-attention layers.
    """

    def __init__(self, dim: int, n_freqs: int = 20, num_heads: int = 4, num_layers: int = 2):
        super().__init__()
        self.lr_pe = FourierFeatures(color_feats=False, n_freqs=5)
        self.fourier_feat = nn.Sequential(MinMaxScaler(), FourierFeatures(True, n_freqs))
        start_dim = self.fourier_feat[1].out_channels
        width = dim + self.lr_pe.out_channels
        if width % num_heads:
            raise ValueError(
                f'LoftUp attends over {width} channels ({dim} feature channels and '
                f'{self.lr_pe.out_channels} of position); num_heads={num_heads} does not divide it'
            )
        self.first_conv = nn.Sequential(
            ChannelNorm(start_dim),
            nn.Conv2d(start_dim, width, kernel_size=3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, kernel_size=3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        self.final_conv = nn.Sequential(nn.Conv2d(width, dim, kernel_size=1), ChannelLayerNorm(dim))
        self.ca_transformer = CrossAttentionTransformer(width, num_layers, num_heads, mlp_dim=dim)

    def forward(self, features: Tensor, image: Tensor, max_query_chunk: int | None) -> Tensor:
        """Upsamples features to the image's size.

        Args:
            features: (B, dim, h, w) channel-normalised features.
            image: (B, 3, H, W) guidance image at the output size, in the dtype of
                :func:`fourier_dtype` (the Fourier features are computed in it).
            max_query_chunk: Output pixels attended at once (the image branch runs in bands of
                rows of at least that many pixels); ``None``: all at once.

        Returns:
            (B, dim, H, W) in the features' dtype.
        """
        dtype = features.dtype
        b, _, h_lr, w_lr = features.shape
        height, width = image.shape[-2:]
        lr_coords = grid_coordinates(h_lr, w_lr, slice(None), image.device, image.dtype)
        position = self.lr_pe.encode(lr_coords, None, dtype).expand(b, -1, -1, -1)
        tokens = torch.cat([features, position], 1).flatten(2).transpose(1, 2)
        keys_values = self.ca_transformer.project_keys(tokens)

        colors = self.fourier_feat[0](image)
        # Batch-norm statistics of a training pass are those of the whole map: no bands then.
        if max_query_chunk is None or self.training:
            band_rows = height
        else:
            band_rows = max(math.ceil(max_query_chunk / width), MIN_BAND_ROWS)
        out_channels = self.final_conv[0].out_channels
        out = features.new_empty(b, out_channels, height, width)
        for top in range(0, height, band_rows):
            bottom = min(top + band_rows, height)
            start, stop = max(top - _CONV_HALO, 0), min(bottom + _CONV_HALO, height)
            rows = slice(start, stop)
            coords = grid_coordinates(height, width, rows, image.device, image.dtype)
            x = self.fourier_feat[1].encode(coords, colors[:, :, rows], dtype)
            x = self.first_conv(x)[:, :, top - start : bottom - start]
            queries = x.flatten(2).transpose(1, 2)
            chunk = queries.shape[1] if max_query_chunk is None else max_query_chunk
            y = torch.cat(
                [
                    self.ca_transformer(queries[:, i : i + chunk], keys_values)
                    for i in range(0, queries.shape[1], chunk)
                ],
                1,
            )
            y = y.transpose(1, 2).reshape(b, -1, bottom - top, width)
            out[:, :, top:bottom] = self.final_conv(y)
        return out
