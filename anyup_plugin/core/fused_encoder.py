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
enabled AnyUp runs the modules themselves, and on CUDA it runs them on whole maps (a few
dozen kernels) whenever they fit in memory (see :mod:`anyup_plugin.core.device_budget`): this
path, with device-filling chunks, is then left to images too large for that. The modules
are not called, so their structure is checked in full first (:func:`unfusable_reason`): AnyUp
runs the modules whenever it is not the one implemented here, rather than compute something
else.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .device_budget import device_profile
from .layers import Encoder, ResBlock, RotaryPositionEmbedding2d
from .precision import compute_dtype

__all__ = ['fused_encoder_forward', 'unfusable_reason']

#: A GroupNorm group's variance comes from float32 sums of squares (relative error about
#: 1e-6); below this fraction of the group's mean square the subtraction would lose more than
#: 1e-4 of it, and the variance is recomputed from the centred map instead.
_MIN_VARIANCE_FRACTION = 1e-2

Size = tuple[int, int]


class _Workspace:
    """Per-chunk scratch buffers of the compute dtype, allocated once per forward.

    Attributes:
        act: (chunk, d) normalised and activated input of a matrix product.
        square: (chunk, d) squares for the statistics.
        cos, sin: (chunk, d) rotary embedding factors.
        ones: (1, chunk) for column sums as matrix-vector products.
    """

    def __init__(
        self, chunk: int, dim: int, device: torch.device, dtype: torch.dtype = torch.float32
    ) -> None:
        self.act = torch.empty(chunk, dim, device=device, dtype=dtype)
        self.square = torch.empty_like(self.act)
        self.cos = torch.empty_like(self.act)
        self.sin = torch.empty_like(self.act)
        self.ones = torch.ones(1, chunk, device=device, dtype=dtype)


class _ChannelStats:
    """Per-channel sums and sums of squares of a (N, d) token map, collected chunk by chunk.

    Each chunk is summed as matrix-vector products in the map's dtype (float32 or float64)
    into its own row, and the rows are added in float64 at the end, so no rounding error
    accumulates across chunks.
    """

    def __init__(
        self,
        channels: int,
        num_chunks: int,
        device: torch.device,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.sums = torch.empty(num_chunks, channels, device=device, dtype=dtype)
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
        The norm's groups, epsilon and affine parameters are its own (none: scale 1, shift 0).
        Returns two (d,) tensors of ``tokens``' dtype.
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
        scale = inv_std if norm.weight is None else norm.weight.double() * inv_std
        shift = -mean * scale if norm.bias is None else norm.bias.double() - mean * scale
        return scale.to(tokens.dtype), shift.to(tokens.dtype)

    def _centred_group_variance(
        self,
        tokens: Tensor,
        rows: Sequence[slice],
        channel_mean: Tensor,
        groups: int,
        work: _Workspace,
    ) -> Tensor:
        """Group variances from a second pass over ``tokens`` minus the channel means."""
        centre = channel_mean.to(tokens.dtype)
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


def _conv1x1_weight_t(conv: nn.Conv2d, dtype: torch.dtype) -> Tensor:
    """(d_out, d_in, 1, 1) conv weight as a (d_in, d_out) matrix of ``dtype`` for ``tokens @ w``."""
    return conv.weight.flatten(1).t().to(dtype).contiguous()


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
        reason = unfusable_reason(image_encoder, query_encoder, key_encoder, rope)
        if reason is not None:
            raise TypeError(f'the fused encoder path does not apply: {reason}')
        self.image, self.query, self.key, self.rope = (
            image_encoder,
            query_encoder,
            key_encoder,
            rope,
        )
        self.dim = query_encoder.first_layer.out_channels
        #: float32, or float64 for a float64 model (see :func:`~.precision.compute_dtype`).
        self.dtype = compute_dtype(image_encoder.first_layer.weight.dtype)

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
        self.work = _Workspace(chunk_rows * width, d, device, self.dtype)

        tokens = image.to(self.dtype).permute(1, 2, 0).reshape(n, 3)
        x, y, scratch = _token_maps(3, n, d, device, memory, self.dtype)
        stats = self._first_layer(tokens, self.image.first_layer, x)
        *inner, last = self.image.blocks
        for block in inner:
            stats = self._residual_block(x, stats, block, y)
        q_stats = self._new_stats()
        k_stats = self._new_stats()
        freqs = self.rope.freqs.to(self.dtype)
        row_angles = self.rope.grid_coordinates(height, device, self.dtype)[:, None] * freqs[0]
        col_angles = self.rope.grid_coordinates(width, device, self.dtype)[:, None] * freqs[1]
        q0_t = _conv1x1_weight_t(self.query.first_layer, self.dtype)
        k0_t = _conv1x1_weight_t(self.key.first_layer, self.dtype)

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
        return _ChannelStats(self.dim, len(self.rows), self.work.act.device, self.dtype)

    def _first_layer(self, tokens: Tensor, conv: nn.Conv2d, out: Tensor) -> _ChannelStats:
        weight = _conv1x1_weight_t(conv, self.dtype)
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
        w2 = _conv1x1_weight_t(block.conv2, self.dtype)
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
        w1 = _conv1x1_weight_t(block.conv1, self.dtype)
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
        w2 = _conv1x1_weight_t(block.conv2, self.dtype)
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
    count: int,
    tokens: int,
    dim: int,
    device: torch.device,
    memory: Tensor | None,
    dtype: torch.dtype = torch.float32,
) -> list[Tensor]:
    """``count`` (tokens, dim) maps of ``dtype``, carved from ``memory`` while it lasts."""
    size = tokens * dim
    spare = memory.view(-1) if memory is not None else None
    maps = []
    for i in range(count):
        if spare is not None and spare.numel() >= (i + 1) * size:
            maps.append(spare[i * size : (i + 1) * size].view(tokens, dim))
        else:
            maps.append(torch.empty(tokens, dim, dtype=dtype, device=device))
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


def unfusable_reason(
    image_encoder: Encoder,
    query_encoder: Encoder,
    key_encoder: Encoder,
    rope: RotaryPositionEmbedding2d,
) -> str | None:
    """Why the fused path cannot stand in for these modules, or None when it can.

    The fused path does not call the modules: it re-implements their forward from their
    parameters. It does so for exactly this structure, checked in full, so that a changed
    module never silently changes inference:

    - each encoder is an :class:`~anyup_plugin.core.layers.Encoder` whose first layer is a
      bias-free, ungrouped, stride-1, unpadded 1x1 ``nn.Conv2d`` (3 -> d for the image
      encoder, d -> d for the others), followed by at least one
      :class:`~anyup_plugin.core.layers.ResBlock`;
    - each block's ``block`` is exactly ``GroupNorm(d) -> SiLU -> conv -> GroupNorm(d) ->
      SiLU -> conv`` with such 1x1 convolutions (d -> d);
    - ``rope`` is a :class:`~anyup_plugin.core.layers.RotaryPositionEmbedding2d` of width d;
    - no module among them has forward hooks or pre-hooks (the fused path would skip them).

    Module types are compared exactly: a subclass may compute something else. What the fused
    path reads from the modules, it follows: the GroupNorms' groups, epsilon and affine
    parameters (or their absence), every weight, and the number of blocks.

    Returns:
        A sentence naming the first module that differs and how, or None.
    """
    # The image encoder's first layer sets the width d that everything else must have.
    reason = _encoder_difference('image_encoder', image_encoder, 3, None)
    if reason is not None:
        return reason
    dim = image_encoder[0].out_channels
    for name, encoder in (('query_encoder', query_encoder), ('key_encoder', key_encoder)):
        reason = _encoder_difference(name, encoder, dim, dim)
        if reason is not None:
            return reason
    if type(rope) is not RotaryPositionEmbedding2d:
        return f'rope is a {type(rope).__name__}, not a RotaryPositionEmbedding2d'
    if tuple(rope.freqs.shape) != (2, dim):
        return f'rope.freqs has shape {tuple(rope.freqs.shape)}, not (2, {dim})'
    modules = ('image_encoder', image_encoder), ('query_encoder', query_encoder)
    for name, module in (*modules, ('key_encoder', key_encoder), ('rope', rope)):
        for sub_name, sub in module.named_modules(prefix=name):
            if sub._forward_hooks or sub._forward_pre_hooks:
                return f'{sub_name} has forward hooks, which the fused path would not run'
    return None


#: The layers of a ResBlock's ``block``, in order: what the fused path implements.
_BLOCK_LAYERS = (nn.GroupNorm, nn.SiLU, nn.Conv2d, nn.GroupNorm, nn.SiLU, nn.Conv2d)


def _encoder_difference(
    name: str, encoder: nn.Module, in_channels: int, dim: int | None
) -> str | None:
    """How ``encoder`` differs from what the fused path implements (None: it does not).

    ``dim`` None takes the width from the first layer.
    """
    if type(encoder) is not Encoder:
        return f'{name} is a {type(encoder).__name__}, not an Encoder'
    if len(encoder) < 2:
        return f'{name} has no residual block'
    reason = _conv1x1_difference(f'{name}.0', encoder[0], in_channels, dim)
    if reason is not None:
        return reason
    dim = encoder[0].out_channels
    for i, block in enumerate(list(encoder)[1:], start=1):
        where = f'{name}.{i}'
        if type(block) is not ResBlock:
            return f'{where} is a {type(block).__name__}, not a ResBlock'
        layers = block.block
        kinds = tuple(type(layer) for layer in layers)
        if type(layers) is not nn.Sequential or kinds != _BLOCK_LAYERS:
            names = ' -> '.join(k.__name__ for k in kinds)
            return f'{where}.block is {names}, not GroupNorm -> SiLU -> Conv2d (twice)'
        for j in (0, 3):
            if layers[j].num_channels != dim:
                return f'{where}.block.{j} normalises {layers[j].num_channels} channels, not {dim}'
        for j in (2, 5):
            reason = _conv1x1_difference(f'{where}.block.{j}', layers[j], dim, dim)
            if reason is not None:
                return reason
    return None


def _conv1x1_difference(
    name: str, conv: nn.Module, in_channels: int, dim: int | None
) -> str | None:
    """How ``conv`` differs from a bias-free 1x1 convolution ``in_channels -> dim`` (any
    width if ``dim`` is None)."""
    if type(conv) is not nn.Conv2d:
        return f'{name} is a {type(conv).__name__}, not an nn.Conv2d'
    if conv.kernel_size != (1, 1):
        return f'{name} has kernel size {conv.kernel_size}, not (1, 1)'
    if conv.bias is not None:
        return f'{name} has a bias'
    if conv.stride != (1, 1):
        return f'{name} has stride {conv.stride}, not (1, 1)'
    # A 1x1 kernel makes 'same' padding zero and dilation irrelevant.
    if conv.padding not in ((0, 0), 'valid', 'same'):
        return f'{name} has padding {conv.padding}, not 0'
    if conv.groups != 1:
        return f'{name} has {conv.groups} groups, not 1'
    if conv.in_channels != in_channels or conv.out_channels != (dim or conv.out_channels):
        return (
            f'{name} maps {conv.in_channels} -> {conv.out_channels} channels, '
            f'not {in_channels} -> {dim or "d"}'
        )
    return None


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
    Computed in float32, or in float64 for float64 encoders (the image is cast to it).

    Args:
        image: (B, 3, H, W) guidance image.
        image_encoder: Encoder whose first layer is a 1x1 convolution 3 -> d.
        query_encoder: Encoder whose first layer is a 1x1 convolution d -> d.
        key_encoder: Likewise.
        rope: The rotary position embedding applied to the image encoder's output.
        query_sizes: (H', W') sizes the queries are pooled to.
        key_sizes: (h, w) sizes the keys are pooled to.
        chunk_tokens: Pixels per chunk (rounded down to whole image rows, at least one row);
            default: the device's
            (:attr:`~anyup_plugin.core.device_budget.DeviceProfile.encoder_chunk_tokens`: a
            cache-sized chunk on the CPU, a device-filling one on CUDA).
        memory: Optional contiguous memory of the compute dtype (float32 for a float32
            model), on the image's device, that the encoders may use for their three (H*W, d)
            working maps as far as it reaches (at batch 1 an unpooled query map then stays in
            it). The caller can lend memory it is about
            to overwrite, e.g. the output before the attention writes it: each fresh page
            costs a fault (on some machines as long as the work on it), and this way the
            output's pages are faulted in once for both uses.

    Returns:
        ``queries``, one (B, d, H', W') map per query size in channels-last memory format, and
        ``keys``, one (B, d, h, w) map per key size, all of the compute dtype. Keys never share
        ``memory``.

    Raises:
        TypeError: The modules are not the structure the fused path implements (see
            :func:`unfusable_reason`; callers that want the modules' result anyway run them).
    """
    encoders = _Encoders(image_encoder, query_encoder, key_encoder, rope)
    dtype = encoders.dtype
    if memory is not None and (
        memory.dtype != dtype or memory.device != image.device or not memory.is_contiguous()
    ):
        raise ValueError(
            f'memory must be a contiguous {str(dtype).removeprefix("torch.")} tensor on the '
            "image's device, got "
            f'{memory.dtype} on {memory.device}'
        )
    if chunk_tokens is None:
        chunk_tokens = device_profile(image.device).encoder_chunk_tokens
    if image.shape[0] == 1:
        # Hand the maps over as they are rather than copying them.
        queries, keys = encoders.encode_one(image[0], query_sizes, key_sizes, chunk_tokens, memory)
        return [q.unsqueeze(0).permute(0, 3, 1, 2) for q in queries], [k.unsqueeze(0) for k in keys]
    batch, d = image.shape[0], encoders.dim
    queries = [image.new_empty(batch, *s, d, dtype=dtype) for s in query_sizes]
    keys = [image.new_empty(batch, d, *s, dtype=dtype) for s in key_sizes]
    for b, img in enumerate(image):
        q_one, k_one = encoders.encode_one(img, query_sizes, key_sizes, chunk_tokens, memory)
        for out, value in zip(queries + keys, q_one + k_one):
            out[b] = value
    return [q.permute(0, 3, 1, 2) for q in queries], keys
