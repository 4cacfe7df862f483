"""Inference path for AnyUp's three full-resolution encoders, fused and chunked.

The image, query and key encoders run 1x1 convolutions, GroupNorm and SiLU at every pixel of
the guidance image: the bulk of AnyUp's work. Run module by module, each GroupNorm and SiLU is
a pass over a ``d x H x W`` map in main memory. Here maps are kept in token layout (N, d),
every operation after a GroupNorm is applied to cache-sized chunks of tokens (normalise,
SiLU, matrix product, residual add, rotary embedding), and the GroupNorm statistics of each
produced map are accumulated while its chunk is still in cache. Each residual block therefore
costs two streaming passes, and at most three full-resolution maps exist at once.

The maths is that of the modules (``ResBlock``, ``RotaryPositionEmbedding2d``); only the order
of floating-point operations differs. It is used under ``torch.no_grad``; with gradients
enabled AnyUp runs the modules themselves.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import Encoder, ResBlock, RotaryPositionEmbedding2d

__all__ = ['fused_encoder_forward']

#: Tokens (pixels) per chunk on the CPU: 4096 x d = 128 float32 is 2 MiB, so a chunk and its
#: products stay in cache between the normalisation, SiLU, matrix product and statistics.
_CPU_CHUNK_TOKENS = 4096
#: Tokens per chunk on CUDA: 2**17 keeps each kernel launch large enough to fill the device.
_CUDA_CHUNK_TOKENS = 1 << 17

Size = tuple[int, int]


class _ChannelStats:
    """Running per-channel mean and variance of a (N, d) token map, chunk by chunk.

    Each chunk is summed as matrix-vector products in float32 and the totals are kept in
    float64. The sums are of the values minus a per-channel shift (the first chunk's mean), so
    the variance never comes from the difference of two large numbers.
    """

    def __init__(self, channels: int, device: torch.device) -> None:
        self.count = 0
        self.shift: Tensor | None = None
        self.total = torch.zeros(channels, dtype=torch.float64, device=device)
        self.total_sq = torch.zeros(channels, dtype=torch.float64, device=device)

    def add(self, chunk: Tensor) -> None:
        if self.shift is None:
            self.shift = chunk.mean(dim=0)
        centred = chunk - self.shift
        ones = chunk.new_ones(1, chunk.shape[0])
        self.total += (ones @ centred).squeeze(0).double()
        self.total_sq += (ones @ centred.mul_(centred)).squeeze(0).double()
        self.count += chunk.shape[0]

    def group_norm_affine(self, norm: nn.GroupNorm) -> tuple[Tensor, Tensor]:
        """Per-channel ``(scale, shift)`` with ``GroupNorm(x) == x * scale + shift``."""
        groups = norm.num_groups
        per_group = self.total.numel() // groups
        centred_mean = self.total / self.count
        channel_var = (self.total_sq / self.count - centred_mean**2).clamp_min(0)
        channel_mean = centred_mean + self.shift.double()
        mean = channel_mean.view(groups, per_group).mean(dim=1).repeat_interleave(per_group)
        # A group's variance: its channels' variances plus the spread of their means.
        var = (channel_var + (channel_mean - mean) ** 2).view(groups, per_group).mean(dim=1)
        inv_std = torch.rsqrt(var + norm.eps).repeat_interleave(per_group)
        scale = norm.weight.double() * inv_std
        shift = norm.bias.double() - mean * scale
        return scale.float(), shift.float()


def _chunks(n: int, size: int) -> list[slice]:
    return [slice(s, min(s + size, n)) for s in range(0, n, size)]


def _conv1x1_weight_t(conv: nn.Conv2d) -> Tensor:
    """(d_out, d_in, 1, 1) conv weight as a (d_in, d_out) matrix for ``tokens @ w``."""
    return conv.weight.flatten(1).t().contiguous()


def _norm_silu(x: Tensor, affine: tuple[Tensor, Tensor]) -> Tensor:
    scale, shift = affine
    return F.silu(torch.addcmul(shift, x, scale), inplace=True)


def _residual_block(
    x: Tensor, stats: _ChannelStats, block: ResBlock, scratch: Tensor, chunk: int, tail=None
) -> _ChannelStats:
    """Runs ``block`` in place on token map ``x`` (N, d), using ``scratch`` (N, d).

    ``tail(rows, x_chunk)``, if given, is called on every finished chunk instead of collecting
    statistics of the output (the caller then owns what happens next). Returns the output's
    statistics (empty if ``tail`` was given).
    """
    w1, w2 = _conv1x1_weight_t(block.conv1), _conv1x1_weight_t(block.conv2)
    affine1 = stats.group_norm_affine(block.norm1)
    mid_stats = _ChannelStats(x.shape[1], x.device)
    for rows in _chunks(x.shape[0], chunk):
        torch.mm(_norm_silu(x[rows], affine1), w1, out=scratch[rows])
        mid_stats.add(scratch[rows])
    affine2 = mid_stats.group_norm_affine(block.norm2)
    out_stats = _ChannelStats(x.shape[1], x.device)
    for rows in _chunks(x.shape[0], chunk):
        x_rows = x[rows]
        x_rows.addmm_(_norm_silu(scratch[rows], affine2), w2)
        if tail is None:
            out_stats.add(x_rows)
        else:
            tail(rows, x_rows)
    return out_stats


def _first_layer(tokens: Tensor, conv: nn.Conv2d, out: Tensor, chunk: int) -> _ChannelStats:
    weight = _conv1x1_weight_t(conv)
    stats = _ChannelStats(out.shape[1], out.device)
    for rows in _chunks(tokens.shape[0], chunk):
        torch.mm(tokens[rows], weight, out=out[rows])
        stats.add(out[rows])
    return stats


def _pool(tokens: Tensor, height: int, width: int, size: Size) -> Tensor:
    """(H*W, d) tokens -> (d, h, w) adaptive average pool (a channels-last view if no pooling)."""
    # A 4-D channels-last view: pooling it runs the channels-last kernel directly (a 3-D map
    # unsqueezed to 4-D is first copied to another layout, 20x slower at 448 px).
    grid = tokens.view(1, height, width, -1).permute(0, 3, 1, 2)
    if (height, width) != tuple(size):
        grid = F.adaptive_avg_pool2d(grid, size)
    return grid.squeeze(0)


def _check_fusable(name: str, encoder: Encoder) -> None:
    if not isinstance(encoder.first_layer, nn.Conv2d) or encoder.first_layer.kernel_size != (1, 1):
        raise TypeError(f'the fused path needs a 1x1 convolution first in {name}')
    if not encoder.blocks:
        raise TypeError(f'the fused path needs at least one residual block in {name}')


class _Encoders:
    """The three full-resolution encoders and the position embedding, for the fused path."""

    def __init__(
        self,
        image_encoder: Encoder,
        query_encoder: Encoder,
        key_encoder: Encoder,
        rope: RotaryPositionEmbedding2d,
    ) -> None:
        for name, enc in (('image', image_encoder), ('query', query_encoder), ('key', key_encoder)):
            _check_fusable(f'the {name} encoder', enc)
        self.image, self.query, self.key, self.rope = (
            image_encoder,
            query_encoder,
            key_encoder,
            rope,
        )
        self.dim = query_encoder.first_layer.out_channels

    def encode_one(
        self, image: Tensor, query_sizes: Sequence[Size], key_sizes: Sequence[Size], chunk: int
    ) -> tuple[list[Tensor], list[Tensor]]:
        """One image (3, H, W) -> queries (H'_i, W'_i, d) per query size, keys (d, h_j, w_j)."""
        _, height, width = image.shape
        d, n, device = self.dim, height * width, image.device
        rope = self.rope
        row_coord = rope.grid_coordinates(height, device)
        col_coord = rope.grid_coordinates(width, device)
        q0_t = _conv1x1_weight_t(self.query.first_layer)
        k0_t = _conv1x1_weight_t(self.key.first_layer)

        tokens = image.float().permute(1, 2, 0).reshape(n, 3)
        x = torch.empty(n, d, dtype=torch.float32, device=device)
        y = torch.empty_like(x)
        stats = _first_layer(tokens, self.image.first_layer, x, chunk)
        *inner, last = self.image.blocks
        for block in inner:
            stats = _residual_block(x, stats, block, y, chunk)
        q_stats = _ChannelStats(d, device)
        k_stats = _ChannelStats(d, device)

        def rope_then_project(rows: slice, e: Tensor) -> None:
            # The image encoder's output chunk gets its position encoding, then feeds the
            # first layers of the query and key encoders. The query map reuses ``y`` (this
            # chunk of it was just consumed), the key map reuses ``x``.
            idx = torch.arange(rows.start, rows.stop, device=device)
            e_rot = rope.rotate(e, rope.angles(row_coord[idx // width], col_coord[idx % width]))
            torch.mm(e_rot, q0_t, out=y[rows])
            q_stats.add(y[rows])
            e.copy_(e_rot @ k0_t)
            k_stats.add(e)

        _residual_block(x, stats, last, y, chunk, tail=rope_then_project)
        scratch = torch.empty_like(x)
        for block in self.key.blocks:
            k_stats = _residual_block(x, k_stats, block, scratch, chunk)
        keys = [_pool(x, height, width, size) for size in key_sizes]
        del x
        for block in self.query.blocks:
            q_stats = _residual_block(y, q_stats, block, scratch, chunk)
        del scratch
        queries = [_pool(y, height, width, size).permute(1, 2, 0) for size in query_sizes]
        return queries, keys


@torch.no_grad()
def fused_encoder_forward(
    image: Tensor,
    image_encoder: Encoder,
    query_encoder: Encoder,
    key_encoder: Encoder,
    rope: RotaryPositionEmbedding2d,
    query_sizes: Sequence[Size],
    key_sizes: Sequence[Size],
) -> tuple[list[Tensor], list[Tensor]]:
    """AnyUp's queries and keys from the guidance image, without gradients.

    Equal (up to floating-point order) to ``adaptive_avg_pool2d(query_encoder(e), size)``
    for every query size and ``adaptive_avg_pool2d(key_encoder(e), size)`` for every key
    size, with ``e = rope(image_encoder(image))``; the encoders run once for all sizes.

    Args:
        image: (B, 3, H, W) guidance image.
        image_encoder: Encoder whose first layer is a 1x1 convolution 3 -> d.
        query_encoder: Encoder whose first layer is a 1x1 convolution d -> d.
        key_encoder: Likewise.
        rope: The rotary position embedding applied to the image encoder's output.
        query_sizes: (H', W') sizes the queries are pooled to.
        key_sizes: (h, w) sizes the keys are pooled to.

    Returns:
        ``queries``, one (B, d, H', W') map per query size in channels-last memory format, and
        ``keys``, one (B, d, h, w) map per key size, all float32.
    """
    encoders = _Encoders(image_encoder, query_encoder, key_encoder, rope)
    chunk = _CUDA_CHUNK_TOKENS if image.device.type == 'cuda' else _CPU_CHUNK_TOKENS
    if image.shape[0] == 1:
        # Hand the maps over as they are rather than copying them.
        queries, keys = encoders.encode_one(image[0], query_sizes, key_sizes, chunk)
        return [q.unsqueeze(0).permute(0, 3, 1, 2) for q in queries], [k.unsqueeze(0) for k in keys]
    batch, d = image.shape[0], encoders.dim
    queries = [image.new_empty(batch, *s, d, dtype=torch.float32) for s in query_sizes]
    keys = [image.new_empty(batch, d, *s, dtype=torch.float32) for s in key_sizes]
    for b, img in enumerate(image):
        q_one, k_one = encoders.encode_one(img, query_sizes, key_sizes, chunk)
        for out, value in zip(queries + keys, q_one + k_one):
            out[b] = value
    return [q.permute(0, 3, 1, 2) for q in queries], keys
