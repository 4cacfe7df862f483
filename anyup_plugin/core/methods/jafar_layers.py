"""JAFAR's layers, under the published module and parameter names (see :mod:`.jafar`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    'CrossAttention',
    'CrossAttentionBlock',
    'ResBlock',
    'RoPE2d',
    'SFTModulation',
    'make_encoder',
]


class ResBlock(nn.Module):
    """Pre-activation residual block of two 1x1 convolutions (GroupNorm, SiLU before each).

    Args:
        channels: Input and output channels.
        num_groups: GroupNorm groups.
    """

    def __init__(self, channels: int, num_groups: int = 8) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(num_groups, channels)
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=1, bias=False)
        self.norm2 = nn.GroupNorm(num_groups, channels)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        h = self.conv1(F.silu(self.norm1(x)))
        return x + self.conv2(F.silu(self.norm2(h)))


def make_encoder(in_dim: int, dim: int, kernel_size: int = 1, num_blocks: int = 2) -> nn.Sequential:
    """A bias-free projection to ``dim`` channels, then ``num_blocks`` residual blocks."""
    projection = nn.Conv2d(
        in_dim,
        dim,
        kernel_size=kernel_size,
        padding=kernel_size // 2,
        padding_mode='reflect',
        bias=False,
    )
    return nn.Sequential(projection, *[ResBlock(dim) for _ in range(num_blocks)])


class SFTModulation(nn.Module):
    """Spatial feature transform: ``gamma(cond) * GroupNorm(x) + beta(cond)``.

    Args:
        channels: Channels of ``x`` and of the condition.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Conv2d(channels, channels, kernel_size=1, bias=False)
        self.beta = nn.Conv2d(channels, channels, kernel_size=1, bias=False)
        self.norm = nn.GroupNorm(8, channels, affine=False)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        """x, cond: (B, C, h, w) -> (B, C, h, w)."""
        return self.gamma(cond) * self.norm(x) + self.beta(cond)


class RoPE2d(nn.Module):
    """2-D rotary position encoding with learned angular frequencies.

    ``freqs[0]`` holds the row frequencies (non-zero on the first half of the channels at
    initialisation) and ``freqs[1]`` the column ones; a pixel at normalised position (y, x)
    in [0, 1]^2 rotates channel pairs (c, c + dim/2) by ``y * freqs[0] + x * freqs[1]``.

    Args:
        dim: Channels (a multiple of 4).
        theta: Ratio of the highest to the lowest initial frequency.
    """

    def __init__(self, dim: int, theta: float = 100.0) -> None:
        super().__init__()
        base = theta ** torch.linspace(0, -1, dim // 4)
        per_axis = torch.cat([base, base])
        freqs = torch.zeros(2, dim)
        freqs[0, : dim // 2] = per_axis
        freqs[1, dim - dim // 2 :] = per_axis
        self.freqs = nn.Parameter(freqs * 2 * torch.pi)

    def forward(self, x: Tensor) -> Tensor:
        """(B, dim, H, W) -> (B, dim, H, W), rotated by each pixel's position."""
        height, width = x.shape[-2:]
        ys = torch.linspace(0, 1, height, device=x.device, dtype=x.dtype)
        xs = torch.linspace(0, 1, width, device=x.device, dtype=x.dtype)
        freqs = self.freqs.to(x.dtype)
        # (dim, H, W): the angle is separable in y and x, so no (H*W, 2) coordinate list.
        angle = freqs[0][:, None, None] * ys[:, None] + freqs[1][:, None, None] * xs
        first, second = x.chunk(2, dim=1)
        rotated = torch.cat((-second, first), dim=1)
        return x * angle.cos() + rotated * angle.sin()


class CrossAttention(nn.Module):
    """RMS-normalised multi-head attention whose head-averaged weights mix the raw values.

    Holds the published module's parameters under their names; ``norm_v`` and the attention's
    value and output projections do not affect the result (see the module docstring).

    Args:
        qk_dim: Query and key channels.
        v_dim: Value (feature) channels.
        num_heads: Attention heads.
    """

    def __init__(self, qk_dim: int, v_dim: int, num_heads: int) -> None:
        super().__init__()
        self.norm_q = nn.RMSNorm(qk_dim)
        self.norm_k = nn.RMSNorm(qk_dim)
        self.norm_v = nn.RMSNorm(v_dim)
        self.attention = nn.MultiheadAttention(
            embed_dim=qk_dim, num_heads=num_heads, vdim=v_dim, dropout=0.0, batch_first=True
        )

    def _projections(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        mha = self.attention
        dim = mha.embed_dim
        if mha.in_proj_weight is not None:  # one packed matrix when v_dim == qk_dim
            w_q, w_k = mha.in_proj_weight[:dim], mha.in_proj_weight[dim : 2 * dim]
        else:
            w_q, w_k = mha.q_proj_weight, mha.k_proj_weight
        b_q, b_k = mha.in_proj_bias[:dim], mha.in_proj_bias[dim : 2 * dim]
        return w_q, b_q, w_k, b_k

    def forward(self, queries: Tensor, keys: Tensor, values: Tensor, chunk: int) -> Tensor:
        """Attends every query to every key, ``chunk`` queries at a time.

        Args:
            queries: (B, N, qk_dim).
            keys: (B, n, qk_dim).
            values: (B, n, v_dim).
            chunk: Queries per step (bounds the (B, heads, chunk, n) attention).

        Returns:
            (B, v_dim, N): channels first, ready to be viewed as a map.
        """
        batch, num_queries, _ = queries.shape
        heads = self.attention.num_heads
        head_dim = self.attention.head_dim
        w_q, b_q, w_k, b_k = self._projections()
        k = F.linear(self.norm_k(keys), w_k, b_k)
        k = k.view(batch, -1, heads, head_dim).permute(0, 2, 3, 1)  # (B, heads, d, n)
        values_t = values.transpose(1, 2)  # (B, v_dim, n)
        # nn.MultiheadAttention scales the projected queries, not the products.
        scale = (1.0 / head_dim) ** 0.5
        # Written chunk by chunk into one tensor: concatenating the chunks would hold the
        # output twice (1.6 GB each for 384 channels at 1024 x 1024).
        out = values.new_empty(batch, values.shape[-1], num_queries)
        for start in range(0, num_queries, chunk):
            q = F.linear(self.norm_q(queries[:, start : start + chunk]), w_q, b_q)
            q = q.view(batch, -1, heads, head_dim).transpose(1, 2) * scale  # (B, heads, c, d)
            weights = torch.softmax(q @ k, dim=-1).mean(dim=1)  # (B, c, n)
            out[:, :, start : start + chunk] = values_t @ weights.transpose(1, 2)
        return out


class CrossAttentionBlock(nn.Module):
    """A 3x3 convolution of the queries, then :class:`CrossAttention`."""

    def __init__(self, qk_dim: int, v_dim: int, num_heads: int) -> None:
        super().__init__()
        self.cross_attn = CrossAttention(qk_dim, v_dim, num_heads)
        self.conv2d = nn.Conv2d(qk_dim, qk_dim, kernel_size=3, padding=1, bias=False)

    def forward(self, queries: Tensor, keys: Tensor, values: Tensor, chunk: int) -> Tensor:
        """queries (B, qk, H', W'), keys (B, qk, h, w), values (B, C, h, w) -> (B, C, H', W')."""
        out_h, out_w = queries.shape[-2:]
        q = self.conv2d(queries).flatten(2).transpose(1, 2)
        k = keys.flatten(2).transpose(1, 2)
        v = values.flatten(2).transpose(1, 2)
        out = self.cross_attn(q, k, v, chunk)
        return out.view(out.shape[0], out.shape[1], out_h, out_w)
