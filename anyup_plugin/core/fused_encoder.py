"""Inference path for AnyUp's three full-resolution encoders, fused and chunked.

The image, query and key encoders run 1x1 convolutions, GroupNorm and SiLU at every pixel of
the guidance image: the bulk of AnyUp's work. Run module by module, each GroupNorm and SiLU is
a pass over a ``d x H x W`` map in main memory. Here maps are kept in token layout (N, d) and
processed in chunks of whole image rows that fit in cache: every operation after a GroupNorm
(normalise, SiLU, matrix product, residual add, rotary embedding) runs on one chunk at a time,
and the GroupNorm statistics of each produced map are accumulated while its chunk is still in
cache. Each residual block therefore costs two streaming passes, at most three
full-resolution maps exist at once, and the per-chunk temporaries live in a few preallocated
buffers (a fresh allocation per chunk costs page faults as large as the work).

The maths is that of the modules (``ResBlock``, ``RotaryPositionEmbedding2d``); only the order
of floating-point operations differs. It is used under ``torch.no_grad``; with gradients
enabled AnyUp runs the modules themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

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
#: A GroupNorm group's variance comes from float32 sums of squares (relative error about
#: 1e-6); below this fraction of the group's mean square the subtraction would lose more than
#: 1e-4 of it, and the variance is recomputed from the centred map instead.
_MIN_VARIANCE_FRACTION = 1e-2

Size = tuple[int, int]


class _Workspace:
    """Per-chunk scratch buffers, allocated once per forward.

    Attributes:
        act: (chunk, d) normalised and activated input of a matrix product.
        square: (chunk, d) squares for the statistics.
        cos, sin: (chunk, d) rotary embedding factors.
        ones: (1, chunk) for column sums as matrix-vector products.
    """

    def __init__(self, chunk: int, dim: int, device: torch.device) -> None:
        self.act = torch.empty(chunk, dim, device=device)
        self.square = torch.empty_like(self.act)
        self.cos = torch.empty_like(self.act)
        self.sin = torch.empty_like(self.act)
        self.ones = torch.ones(1, chunk, device=device)


class _ChannelStats:
    """Per-channel sums and sums of squares of a (N, d) token map, collected chunk by chunk.

    Each chunk is summed as matrix-vector products in float32 into its own row, and the rows
    are added in float64 at the end, so no rounding error accumulates across chunks.
    """

    def __init__(self, channels: int, num_chunks: int, device: torch.device) -> None:
        self.sums = torch.empty(num_chunks, channels, device=device)
        self.sums_sq = torch.empty_like(self.sums)
        self.filled = 0
        self.count = 0

    def add(self, chunk: Tensor, work: _Workspace) -> None:
        n, i = chunk.shape[0], self.filled
        ones = work.ones[:, :n]
        torch.mm(ones, chunk, out=self.sums[i : i + 1])
        torch.mm(ones, torch.mul(chunk, chunk, out=work.square[:n]), out=self.sums_sq[i : i + 1])
        self.filled += 1
        self.count += n

    def group_norm_affine(
        self, norm: nn.GroupNorm, tokens: Tensor, rows: Sequence[slice], work: _Workspace
    ) -> tuple[Tensor, Tensor]:
        """Per-channel ``(scale, shift)`` with ``GroupNorm(tokens) == tokens * scale + shift``.

        ``tokens`` is the (N, d) map these statistics were collected from, read again (chunk by
        chunk over ``rows``) only when a group's variance is too small for the sums of squares.
        """
        groups = norm.num_groups
        per_group = self.sums.shape[1] // groups
        channel_mean = self.sums[: self.filled].double().sum(0) / self.count
        channel_mean_sq = self.sums_sq[: self.filled].double().sum(0) / self.count
        mean = channel_mean.view(groups, per_group).mean(dim=1)
        mean_sq = channel_mean_sq.view(groups, per_group).mean(dim=1)
        var = mean_sq - mean**2
        # On an accelerator the centred pass is cheap and deciding would cost a host sync.
        if tokens.device.type != 'cpu' or bool((var < _MIN_VARIANCE_FRACTION * mean_sq).any()):
            var = self._centred_group_variance(tokens, rows, channel_mean, groups, work)
        inv_std = torch.rsqrt(var.clamp_min(0) + norm.eps).repeat_interleave(per_group)
        mean = mean.repeat_interleave(per_group)
        scale = norm.weight.double() * inv_std
        shift = norm.bias.double() - mean * scale
        return scale.float(), shift.float()

    def _centred_group_variance(
        self,
        tokens: Tensor,
        rows: Sequence[slice],
        channel_mean: Tensor,
        groups: int,
        work: _Workspace,
    ) -> Tensor:
        """Group variances from a second pass over ``tokens`` minus the channel means."""
        centre = channel_mean.float()
        centred_sq = torch.zeros_like(channel_mean)
        for r in rows:
            n = r.stop - r.start
            diff = torch.sub(tokens[r], centre, out=work.square[:n])
            centred_sq += (work.ones[:, :n] @ diff.mul_(diff)).squeeze(0).double()
        channel_var = centred_sq / self.count
        # A group's variance: its channels' variances plus the spread of their means.
        per_group = channel_mean.view(groups, -1)
        spread = (per_group - per_group.mean(dim=1, keepdim=True)) ** 2
        return (channel_var.view(groups, -1) + spread).mean(dim=1)


def _conv1x1_weight_t(conv: nn.Conv2d) -> Tensor:
    """(d_out, d_in, 1, 1) conv weight as a (d_in, d_out) matrix for ``tokens @ w``."""
    return conv.weight.flatten(1).t().contiguous()


def _norm_silu(x: Tensor, affine: tuple[Tensor, Tensor], work: _Workspace) -> Tensor:
    """SiLU(x * scale + shift) of a (n, d) chunk, into the workspace."""
    scale, shift = affine
    return F.silu(torch.addcmul(shift, x, scale, out=work.act[: x.shape[0]]), inplace=True)


#: ``tail(rows, x_chunk)``: what happens to a finished chunk of a residual block's output.
ChunkTail = Callable[[slice, Tensor], None]


def _no_statistics(rows: slice, chunk: Tensor) -> None:
    """The tail of an encoder's last block: its output is only pooled, no norm follows."""


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
        self,
        image: Tensor,
        query_sizes: Sequence[Size],
        key_sizes: Sequence[Size],
        chunk_tokens: int,
        memory: Tensor | None,
    ) -> tuple[list[Tensor], list[Tensor]]:
        """One image (3, H, W) -> queries (H'_i, W'_i, d) per query size, keys (d, h_j, w_j).

        The full-resolution maps are carved from ``memory`` as far as it reaches; an unpooled
        query map is then a view of it.
        """
        _, height, width = image.shape
        d, n, device = self.dim, height * width, image.device
        # Chunks of whole image rows: the rotary angles of a chunk are then one broadcast sum
        # of per-row and per-column angles.
        chunk_rows = max(1, chunk_tokens // width)
        self.rows = [
            slice(r * width, min(r + chunk_rows, height) * width)
            for r in range(0, height, chunk_rows)
        ]
        self.work = _Workspace(chunk_rows * width, d, device)

        tokens = image.float().permute(1, 2, 0).reshape(n, 3)
        x, y, scratch = _token_maps(3, n, d, device, memory)
        stats = self._first_layer(tokens, self.image.first_layer, x)
        *inner, last = self.image.blocks
        for block in inner:
            stats = self._residual_block(x, stats, block, y)
        q_stats = self._new_stats()
        k_stats = self._new_stats()
        freqs = self.rope.freqs.float()
        row_angles = self.rope.grid_coordinates(height, device)[:, None] * freqs[0]
        col_angles = self.rope.grid_coordinates(width, device)[:, None] * freqs[1]
        q0_t = _conv1x1_weight_t(self.query.first_layer)
        k0_t = _conv1x1_weight_t(self.key.first_layer)

        def rope_then_project(rows: slice, e: Tensor) -> None:
            # The image encoder's output chunk gets its position encoding, then feeds the
            # first layers of the query and key encoders. The query map reuses ``y`` (this
            # chunk of it was just consumed), the key map reuses ``x``.
            image_rows = slice(rows.start // width, rows.stop // width)
            e_rot = self._rotate(e, row_angles[image_rows], col_angles)
            torch.mm(e_rot, q0_t, out=y[rows])
            q_stats.add(y[rows], self.work)
            torch.mm(e_rot, k0_t, out=e)
            k_stats.add(e, self.work)

        self._residual_block(x, stats, last, y, tail=rope_then_project)
        *inner, last = self.key.blocks
        for block in inner:
            k_stats = self._residual_block(x, k_stats, block, scratch)
        # Keys outlive ``memory`` (the caller may overwrite it after the query convolution),
        # so an unpooled key map is copied out of it.
        keys = self._pooled_last_block(
            x, k_stats, last, scratch, (height, width), key_sizes, copy=memory is not None
        )
        del x
        *inner, last = self.query.blocks
        for block in inner:
            q_stats = self._residual_block(y, q_stats, block, scratch)
        queries = self._pooled_last_block(y, q_stats, last, scratch, (height, width), query_sizes)
        del scratch
        return [q.permute(1, 2, 0) for q in queries], keys

    def _new_stats(self) -> _ChannelStats:
        return _ChannelStats(self.dim, len(self.rows), self.work.act.device)

    def _first_layer(self, tokens: Tensor, conv: nn.Conv2d, out: Tensor) -> _ChannelStats:
        weight = _conv1x1_weight_t(conv)
        stats = self._new_stats()
        for rows in self.rows:
            torch.mm(tokens[rows], weight, out=out[rows])
            stats.add(out[rows], self.work)
        return stats

    def _residual_block(
        self,
        x: Tensor,
        stats: _ChannelStats,
        block: ResBlock,
        scratch: Tensor,
        tail: ChunkTail | None = None,
    ) -> _ChannelStats:
        """Runs ``block`` in place on token map ``x`` (N, d), using ``scratch`` (N, d).

        ``tail``, if given, is called on every finished chunk instead of collecting statistics
        of the output (the caller then owns what happens next). Returns the output's
        statistics (empty if ``tail`` was given).
        """
        affine2 = self._block_first_half(x, stats, block, scratch)
        w2 = _conv1x1_weight_t(block.conv2)
        out_stats = self._new_stats()
        for rows in self.rows:
            x_rows = x[rows]
            x_rows.addmm_(_norm_silu(scratch[rows], affine2, self.work), w2)
            if tail is None:
                out_stats.add(x_rows, self.work)
            else:
                tail(rows, x_rows)
        return out_stats

    def _block_first_half(
        self, x: Tensor, stats: _ChannelStats, block: ResBlock, scratch: Tensor
    ) -> tuple[Tensor, Tensor]:
        """``scratch = conv1(SiLU(norm1(x)))`` chunk by chunk; returns ``norm2``'s affine of it.

        ``stats`` are those of ``x``; the returned ``(scale, shift)`` make ``norm2(scratch)``
        equal to ``scratch * scale + shift``.
        """
        w1 = _conv1x1_weight_t(block.conv1)
        affine1 = stats.group_norm_affine(block.norm1, x, self.rows, self.work)
        mid_stats = self._new_stats()
        for rows in self.rows:
            torch.mm(_norm_silu(x[rows], affine1, self.work), w1, out=scratch[rows])
            mid_stats.add(scratch[rows], self.work)
        return mid_stats.group_norm_affine(block.norm2, scratch, self.rows, self.work)

    def _pooled_last_block(
        self,
        x: Tensor,
        stats: _ChannelStats,
        block: ResBlock,
        scratch: Tensor,
        grid: Size,
        sizes: Sequence[Size],
        copy: bool = False,
    ) -> list[Tensor]:
        """An encoder's last block on token map ``x`` (N, d), pooled to every size: (d, h, w) maps.

        Only pooled results are needed, and pooling and the 1x1 ``conv2`` are both linear:
        ``pool(x + conv2(a)) = pool(x) + conv2(pool(a))``. For every size smaller than the map,
        ``conv2`` runs on the pooled maps instead of at full resolution; each size is computed
        the same way whatever other sizes are asked for, so results do not depend on the
        company they are computed in. Sizes not smaller than the map pool the block's output
        (unpooled: a view of ``x``, or a copy if ``copy``). ``x`` and ``scratch`` are
        overwritten.
        """
        height, width = grid
        small = [h * w < height * width for h, w in sizes]
        if not any(small):
            self._residual_block(x, stats, block, scratch, tail=_no_statistics)
            return [_pool(x, height, width, size, copy=copy) for size in sizes]
        scale, shift = self._block_first_half(x, stats, block, scratch)
        w2 = _conv1x1_weight_t(block.conv2)
        for rows in self.rows:
            chunk = scratch[rows]  # a = SiLU(GroupNorm(conv1 output)), in place
            F.silu(torch.addcmul(shift, chunk, scale, out=chunk), inplace=True)
        maps: list[Tensor | None] = []
        for size, pooled in zip(sizes, small):
            if not pooled:
                maps.append(None)
                continue
            pooled_x = _pool(x, height, width, size).permute(1, 2, 0).reshape(-1, self.dim)
            pooled_a = _pool(scratch, height, width, size).permute(1, 2, 0).reshape(-1, self.dim)
            out = torch.addmm(pooled_x, pooled_a, w2)
            maps.append(out.view(*size, self.dim).permute(2, 0, 1))
        if not all(small):
            for rows in self.rows:
                x[rows].addmm_(scratch[rows], w2)
            maps = [
                _pool(x, height, width, size, copy=copy) if m is None else m
                for m, size in zip(maps, sizes)
            ]
        return maps

    def _rotate(self, e: Tensor, row_angles: Tensor, col_angles: Tensor) -> Tensor:
        """The rotary embedding of a chunk of whole rows, into the workspace.

        Args:
            e: (rows * W, d) chunk.
            row_angles: (rows, d) ``x * freqs[0]`` of the chunk's rows.
            col_angles: (W, d) ``y * freqs[1]`` of every column.
        """
        n, d = e.shape
        work = self.work
        angle = torch.add(
            row_angles[:, None], col_angles[None], out=work.act[:n].view(-1, *col_angles.shape)
        ).view(n, d)
        cos = torch.cos(angle, out=work.cos[:n])
        sin = torch.sin(angle, out=work.sin[:n])
        return self.rope.rotate(e, cos, sin, out=work.act[:n])


def _token_maps(
    count: int, tokens: int, dim: int, device: torch.device, memory: Tensor | None
) -> list[Tensor]:
    """``count`` float32 (tokens, dim) maps, carved from ``memory`` while it lasts."""
    size = tokens * dim
    spare = memory.view(-1) if memory is not None else None
    maps = []
    for i in range(count):
        if spare is not None and spare.numel() >= (i + 1) * size:
            maps.append(spare[i * size : (i + 1) * size].view(tokens, dim))
        else:
            maps.append(torch.empty(tokens, dim, dtype=torch.float32, device=device))
    return maps


def _pool(tokens: Tensor, height: int, width: int, size: Size, copy: bool = False) -> Tensor:
    """(H*W, d) tokens -> (d, h, w) adaptive average pool.

    Without pooling the result is a channels-last view of ``tokens``, or a copy if ``copy``.
    """
    # A 4-D channels-last view: pooling it runs the channels-last kernel directly (a 3-D map
    # unsqueezed to 4-D is first copied to another layout, 20x slower at 448 px).
    grid = tokens.view(1, height, width, -1).permute(0, 3, 1, 2)
    if (height, width) != tuple(size):
        grid = F.adaptive_avg_pool2d(grid, size)
    elif copy:
        grid = grid.clone()
    return grid.squeeze(0)


def _check_fusable(name: str, encoder: Encoder) -> None:
    if not isinstance(encoder.first_layer, nn.Conv2d) or encoder.first_layer.kernel_size != (1, 1):
        raise TypeError(f'the fused path needs a 1x1 convolution first in {name}')
    if not encoder.blocks:
        raise TypeError(f'the fused path needs at least one residual block in {name}')


@torch.no_grad()
def fused_encoder_forward(
    image: Tensor,
    image_encoder: Encoder,
    query_encoder: Encoder,
    key_encoder: Encoder,
    rope: RotaryPositionEmbedding2d,
    query_sizes: Sequence[Size],
    key_sizes: Sequence[Size],
    chunk_tokens: int | None = None,
    memory: Tensor | None = None,
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
        chunk_tokens: Pixels per chunk (rounded down to whole image rows, at least one row);
            default: a cache-sized chunk on the CPU, a device-filling one on CUDA.
        memory: Optional contiguous float32 memory, on the image's device, that the encoders
            may use for their three (H*W, d) working maps as far as it reaches (at batch 1
            an unpooled query map then stays in it). The caller can lend memory it is about
            to overwrite, e.g. the output before the attention writes it: each fresh page
            costs a fault (on some machines as long as the work on it), and this way the
            output's pages are faulted in once for both uses.

    Returns:
        ``queries``, one (B, d, H', W') map per query size in channels-last memory format, and
        ``keys``, one (B, d, h, w) map per key size, all float32. Keys never share ``memory``.
    """
    if memory is not None and (
        memory.dtype != torch.float32 or memory.device != image.device or not memory.is_contiguous()
    ):
        raise ValueError(
            "memory must be a contiguous float32 tensor on the image's device, got "
            f'{memory.dtype} on {memory.device}'
        )
    encoders = _Encoders(image_encoder, query_encoder, key_encoder, rope)
    if chunk_tokens is None:
        chunk_tokens = _CUDA_CHUNK_TOKENS if image.device.type == 'cuda' else _CPU_CHUNK_TOKENS
    if image.shape[0] == 1:
        # Hand the maps over as they are rather than copying them.
        queries, keys = encoders.encode_one(image[0], query_sizes, key_sizes, chunk_tokens, memory)
        return [q.unsqueeze(0).permute(0, 3, 1, 2) for q in queries], [k.unsqueeze(0) for k in keys]
    batch, d = image.shape[0], encoders.dim
    queries = [image.new_empty(batch, *s, d, dtype=torch.float32) for s in query_sizes]
    keys = [image.new_empty(batch, d, *s, dtype=torch.float32) for s in key_sizes]
    for b, img in enumerate(image):
        q_one, k_one = encoders.encode_one(img, query_sizes, key_sizes, chunk_tokens, memory)
        for out, value in zip(queries + keys, q_one + k_one):
            out[b] = value
    return [q.permute(0, 3, 1, 2) for q in queries], keys
