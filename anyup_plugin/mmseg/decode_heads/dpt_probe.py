"""The body of Probe3D's DPT probe: per-level projections, refinement and fusion, upsampling."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ['DPTProbe']


class _ResidualConvUnit(nn.Module):
    """``x + relu(conv(relu(conv(x))))`` at constant width (Probe3D's variant: ReLU last)."""

    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, kernel_size, padding=pad),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, kernel_size, padding=pad),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class _Fusion(nn.Module):
    """Refines a level and adds the running output: ``rcu2(rcu1(level) + previous)``."""

    def __init__(self, channels: int, kernel_size: int, with_skip: bool = True) -> None:
        super().__init__()
        self.refine = _ResidualConvUnit(channels, kernel_size) if with_skip else None
        self.merge = _ResidualConvUnit(channels, kernel_size)

    def forward(self, level: Tensor, previous: Tensor | None = None) -> Tensor:
        if previous is not None:
            level = self.refine(level) + previous
        return self.merge(level)


class DPTProbe(nn.Module):
    """Probe3D's DPT decoder without its last convolution.

    Four same-size maps (from the shallowest layer to the deepest) are projected to
    ``channels`` by 1x1 convs, upsampled by ``upsample[0]``, fused from the deepest level to
    the shallowest (each level refined by a residual unit and added to the running output),
    upsampled by ``upsample[1]``, then passed through a 3x3 conv and ReLU. The head adds the
    final 3x3 conv to the outputs and the last ``upsample[2]`` (Probe3D: (2, 4, 2), i.e. 16x the
    token grid: 480 px input, 34 tokens, 544 px output then resized to 480).

    With AnyUp the maps arrive already upsampled (e.g. stride 4), so the configs pass
    ``upsample=(1, 4, 1)``: fusion at the upsampled maps' resolution, output at the input's.

    Args:
        in_channels: Channels of the four maps.
        channels: Hidden width (Probe3D: 512).
        kernel_size: Kernel of the residual units (Probe3D's default DPT probe: 3).
        upsample: The three bilinear upsampling factors.
        align_corners: Of those upsamplings (Probe3D since 2025-11-28: True; before: nearest).

    Shapes:
        Input: 4 maps (B, C_i, h, w). Output: (B, channels, h * u0 * u1, w * u0 * u1).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        channels: int = 512,
        kernel_size: int = 3,
        upsample: Sequence[float] = (2, 4, 2),
        align_corners: bool = True,
    ) -> None:
        super().__init__()
        if len(in_channels) != 4 or len(upsample) != 3:
            raise ValueError(
                f'DPTProbe takes 4 maps and 3 upsampling factors, got in_channels={in_channels!r}'
                f', upsample={upsample!r}'
            )
        if kernel_size % 2 != 1:
            raise ValueError(f'kernel_size must be odd, got {kernel_size}')
        self.project = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)
        self.fuse = nn.ModuleList(_Fusion(channels, kernel_size, with_skip=i < 3) for i in range(4))
        self.out_conv = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(True))
        self.upsample = tuple(float(u) for u in upsample)
        self.align_corners = align_corners

    def scale(self, x: Tensor, factor: float) -> Tensor:
        """Bilinear upsampling by ``factor`` (identity for 1)."""
        if factor == 1:
            return x
        return F.interpolate(
            x, scale_factor=factor, mode='bilinear', align_corners=self.align_corners
        )

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        if len(feats) != 4 or len({tuple(f.shape[-2:]) for f in feats}) != 1:
            raise ValueError(
                f'DPTProbe needs 4 maps of one size, got {[tuple(f.shape) for f in feats]}'
            )
        levels = [self.scale(proj(f), self.upsample[0]) for proj, f in zip(self.project, feats)]
        out = self.fuse[3](levels[3])
        for i in (2, 1, 0):
            out = self.fuse[i](levels[i], out)
        return self.out_conv(self.scale(out, self.upsample[1]))
