"""Building blocks of AnyUp, named so that the published checkpoints load as they are."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    'ReflectPadConv2d',
    'CrossAttention',
    'CrossAttentionBlock',
    'LearnedFeatureUnification',
    'ResBlock',
    'RotaryPositionEmbedding2d',
    'make_encoder',
]


class ResBlock(nn.Module):
    """Pre-activation residual block: ``x + conv(SiLU(GN(conv(SiLU(GN(x))))))`` with 1x1 convs.

    Args:
        channels: Number of channels ``d``.
        num_groups: GroupNorm groups.
    """

    def __init__(self, channels: int, num_groups: int = 8) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.GroupNorm(num_groups, channels),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.GroupNorm(num_groups, channels),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 1, bias=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        """(B, d, H, W) -> (B, d, H, W)."""
        return x + self.block(x)


class ReflectPadConv2d(nn.Conv2d):
    """A bias-free ``k x k`` convolution with reflect padding ``k // 2`` that accepts any size.

    Reflect padding needs each side to be longer than the padding; the published model fails
    on 1-pixel-wide feature maps. Sides too short to reflect are padded by replication (the
    limit of reflection on a constant border) instead.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size, bias=False)
        self.pad = kernel_size // 2

    def forward(self, x: Tensor) -> Tensor:
        """(B, in, h, w) -> (B, out, h, w)."""
        p = self.pad
        h, w = x.shape[-2:]
        if h > p and w > p:
            x = F.pad(x, (p, p, p, p), mode='reflect')
        else:
            x = F.pad(x, (p, p, p, p), mode='replicate')
        return F.conv2d(x, self.weight)


def make_encoder(first_layer: nn.Module, channels: int, num_groups: int = 8) -> nn.Sequential:
    """An AnyUp encoder: ``first_layer`` followed by two :class:`ResBlock`."""
    return nn.Sequential(
        first_layer, ResBlock(channels, num_groups), ResBlock(channels, num_groups)
    )


class LearnedFeatureUnification(nn.Module):
    """Maps features with any number of channels to ``out_channels`` channels.

    Every input channel is convolved on its own with every learned ``k x k`` basis filter
    (zero padding; each response divided by the number of taps inside the image), a softmax
    is taken over groups of ``d`` responses, and the result is averaged over ``C`` groups.

    The grouping is the one the published checkpoints were trained with, and it is not the
    obvious one: the ``C * d`` responses, ordered channel-major (``o = c_i * d + d_i``), are
    read as a ``(d, C)`` array, so softmax group ``j`` holds responses ``o = a * C + j`` for
    ``a < d``, and output channel ``a`` averages over ``j``. (Reading them as ``(C, d)``,
    i.e. a softmax over each channel's own ``d`` responses, would make the result independent
    of channel order, but does not reproduce the published model.)

    Responses are bounded by ``max |basis|`` (features are unit-normalised per pixel), so the
    softmax is shifted by that bound instead of a per-group maximum; this lets channels be
    processed in chunks (one pass for the softmax denominators, one for the output), and
    memory stays bounded for any C.

    Args:
        out_channels: Number of basis filters ``d``.
        kernel_size: Basis filter size ``k`` (odd).
        max_chunk_elements: Upper bound on the ``B * c * d * h * w`` responses computed at once.
    """

    def __init__(
        self, out_channels: int, kernel_size: int = 5, max_chunk_elements: int = 2**22
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f'kernel_size must be odd, got {kernel_size}')
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.max_chunk_elements = max_chunk_elements
        self.basis = nn.Parameter(torch.randn(out_channels, 1, kernel_size, kernel_size))

    def forward(self, features: Tensor) -> Tensor:
        """(B, C, h, w) features, unit-normalised over C -> (B, d, h, w) descriptors (float32)."""
        # The softmax runs over exponentials of responses: keep it in float32 under autocast.
        with torch.autocast(features.device.type, enabled=False):
            return self._unify(features)

    def _unify(self, features: Tensor) -> Tensor:
        b, c, h, w = features.shape
        d = self.out_channels
        pad = self.kernel_size // 2
        basis = self.basis.float()
        features = features.float()
        taps_inside = F.conv2d(
            features.new_ones(1, 1, h, w), torch.ones_like(basis[:1]), padding=pad
        )
        bound = basis.detach().abs().max()
        if bound > 40:
            # exp(-2 * bound) could underflow: shift by the exact per-group maximum instead.
            resp = F.conv2d(features.reshape(b * c, 1, h, w), basis, padding=pad) / taps_inside
            return resp.view(b, d, c, h, w).softmax(dim=1).mean(dim=2)

        chunk = max(1, min(c, self.max_chunk_elements // max(1, b * d * h * w)))

        def shifted_exp(start: int) -> tuple[Tensor, Tensor]:
            part = features[:, start : start + chunk]
            n = part.shape[1]
            resp = F.conv2d(part.reshape(b * n, 1, h, w), basis, padding=pad) / taps_inside
            flat = torch.arange(start * d, (start + n) * d, device=features.device)
            return (resp.view(b, n * d, h, w) - bound).exp(), flat

        denom = features.new_zeros(b, c, h, w)
        for start in range(0, c, chunk):
            e, flat = shifted_exp(start)
            denom = denom.index_add(1, flat % c, e)
        out = features.new_zeros(b, d, h, w)
        for start in range(0, c, chunk):
            e, flat = shifted_exp(start)
            out = out.index_add(1, flat // c, e / denom[:, flat % c])
        return out / c


class RotaryPositionEmbedding2d(nn.Module):
    """Rotary position embedding over a 2-D grid with learned frequencies.

    Pixel ``(i, j)`` of an ``H x W`` map gets coordinates ``(i / (H - 1), j / (W - 1))`` (0 on
    a side of length 1); its angle is ``x * freqs[0] + y * freqs[1]``.

    Args:
        dim: Channel count ``d`` (divisible by 4).
        theta: Base of the initial frequencies.
    """

    def __init__(self, dim: int, theta: float = 100.0) -> None:
        super().__init__()
        if dim % 4 != 0:
            raise ValueError(f'dim must be divisible by 4, got {dim}')
        self.dim = dim
        self.theta = theta
        self.freqs = nn.Parameter(self.initial_freqs(dim, theta))

    @staticmethod
    def initial_freqs(dim: int, theta: float = 100.0) -> Tensor:
        """The published initialisation, (2, dim)."""
        f = theta ** torch.linspace(0, -1, dim // 4)
        g = torch.cat([f, f])
        freqs = torch.zeros(2, dim)
        freqs[0, : dim // 2] = g
        freqs[1, dim // 2 :] = g
        return freqs * 2 * math.pi

    @staticmethod
    def grid_coordinates(size: int, device: torch.device) -> Tensor:
        """Coordinates ``i / (size - 1)`` in float32, (size,)."""
        return torch.linspace(0, 1, size, device=device, dtype=torch.float32)

    def angles(self, x: Tensor, y: Tensor) -> Tensor:
        """Angles ``x * freqs[0] + y * freqs[1]`` in float32, shape ``broadcast(x, y) + (d,)``."""
        freqs = self.freqs.float()
        return x[..., None] * freqs[0] + y[..., None] * freqs[1]

    @staticmethod
    def rotate(x: Tensor, angle: Tensor) -> Tensor:
        """``x * cos(angle) + rot(x) * sin(angle)`` along the last dim, ``rot(v) = [-v2, v1]``."""
        x1, x2 = x.chunk(2, dim=-1)
        rotated = torch.cat([-x2, x1], dim=-1)
        return x * angle.cos() + rotated * angle.sin()

    def forward(self, x: Tensor) -> Tensor:
        """(B, d, H, W) -> (B, d, H, W) with positions encoded (math in float32)."""
        _, _, h, w = x.shape
        angle = self.angles(
            self.grid_coordinates(h, x.device)[:, None], self.grid_coordinates(w, x.device)[None]
        )
        out = self.rotate(x.permute(0, 2, 3, 1).float(), angle)
        return out.permute(0, 3, 1, 2).to(x.dtype)


class CrossAttention(nn.Module):
    """Parameters of AnyUp's query-key attention (RMS norms and a standard input projection).

    Only the query and key thirds of ``attention.in_proj_*`` are used; the value third and
    ``attention.out_proj`` exist so the published checkpoints load unchanged.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.norm_q = nn.RMSNorm(dim)
        self.norm_k = nn.RMSNorm(dim)
        self.attention = nn.MultiheadAttention(dim, num_heads, batch_first=True)


class CrossAttentionBlock(nn.Module):
    """Holds the query refinement conv and the attention parameters."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.conv2d = nn.Conv2d(dim, dim, 3, padding=1, bias=False)
        self.cross_attn = CrossAttention(dim, num_heads)
