"""Upsamplers without weights: bicubic interpolation, the guided filter and joint bilateral
upsampling, the classical baselines of feature-upsampling papers.

All three take any features (any channel count, any patch size) and refuse a checkpoint.
The image is ImageNet-normalised RGB, so colour distances and the guided filter's ``eps`` are
in those units: one unit is about 0.226 of the [0, 1] intensity range (the mean of
:data:`~anyup_plugin.constants.IMAGENET_STD`).
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ...constants import IMAGENET_STD
from ..checks import check_feature_map, check_image, check_output_size, check_same_batch_and_device
from .base import UpsamplingMethod

__all__ = [
    'BicubicUpsampler',
    'GuidedFilterUpsampler',
    'JointBilateralUpsampler',
    'box_mean',
    'resize_guide',
]

Size = tuple[int, int]

#: One unit of an ImageNet-normalised image in [0, 1] intensity (the mean channel std).
_NORMALISED_UNIT = sum(IMAGENET_STD) / len(IMAGENET_STD)

#: Elements (of the working dtype) a chunk of channels (guided filter) or of output rows
#: (joint bilateral) may hold in its temporaries: 2^26 float32 values are 256 MiB, so a
#: 1024 x 1024 output of 384 channels never holds more than the result and one chunk.
_CHUNK_ELEMENTS = 2**26


class _Weightless(UpsamplingMethod):
    """Shared by the methods here: no weights, so a checkpoint is a mistake worth naming."""

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, **kwargs: Any) -> UpsamplingMethod:
        raise ValueError(
            f'{cls.name!r} ({cls.__name__}) has no weights, so it cannot load {str(path)!r}; '
            f'build it without a checkpoint (build_method({cls.name!r}))'
        )

    def _checked(
        self, image: Tensor | None, features: Tensor, output_size: Size | None
    ) -> tuple[Tensor | None, Tensor, Size]:
        """Validated inputs; the output size defaults to the image's."""
        check_feature_map(features)
        if image is None:
            if self.uses_image:
                raise ValueError(
                    f'{self.name!r} is guided by the image: pass the (B, 3, H, W) '
                    "ImageNet-normalised image, or use 'bilinear' or 'bicubic' without one"
                )
            if output_size is None:
                raise ValueError(f'{self.name!r} needs output_size when no image is given')
            return None, features, check_output_size(output_size, (0, 0))
        check_image(image)
        check_same_batch_and_device(image, features, 'image', 'features')
        return image, features, check_output_size(output_size, tuple(image.shape[-2:]))


def _work_dtype(features: Tensor) -> torch.dtype:
    """At least float32: box sums and Gaussians in half precision lose the small differences
    both filters are made of."""
    return torch.promote_types(features.dtype, torch.float32)


def resize_guide(image: Tensor, size: Size) -> Tensor:
    """The image at ``size``: bilinear when enlarging, antialiased (a triangle filter over
    every source pixel) when shrinking, so a small guide averages rather than aliases.

    Args:
        image: (B, 3, H, W).
        size: (H', W').

    Returns:
        (B, 3, H', W'); ``image`` itself when the size already matches.
    """
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return F.interpolate(image, size=size, mode='bilinear', align_corners=False, antialias=True)


def _box_sum(x: Tensor, radius: int, dim: int) -> Tensor:
    """Sums over ``[i - radius, i + radius]`` along ``dim``, clipped to the map, from one
    cumulative sum ``c`` (O(1) per element whatever the radius): ``c[min(i + r, n - 1)]``
    less ``c[i - r - 1]`` where that index is on the map."""
    n = x.shape[dim]
    cumulative = x.cumsum(dim)
    out = torch.empty_like(x)
    inner = max(0, n - radius)  # the windows that end inside the map
    if inner:
        out.narrow(dim, 0, inner).copy_(cumulative.narrow(dim, radius, inner))
    out.narrow(dim, inner, n - inner).copy_(cumulative.narrow(dim, n - 1, 1))
    started = n - radius - 1  # the windows that start after the first pixel
    if started > 0:
        out.narrow(dim, radius + 1, started).sub_(cumulative.narrow(dim, 0, started))
    return out


def _window_counts(n: int, radius: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    index = torch.arange(n, device=device)
    return ((index + radius).clamp(max=n - 1) - (index - radius).clamp(min=0) + 1).to(dtype)


def box_mean(x: Tensor, radius: int) -> Tensor:
    """Mean over the (2r+1) x (2r+1) window around each pixel, clipped to the map.

    Border pixels are divided by the number of pixels their window really holds, so a
    constant map stays constant up to its edges.

    Args:
        x: (..., H, W).
        radius: Window radius r >= 0, in pixels.

    Returns:
        (..., H, W).
    """
    h, w = x.shape[-2:]
    counts = _window_counts(h, radius, x.device, x.dtype)[:, None] * _window_counts(
        w, radius, x.device, x.dtype
    )
    return _box_sum(_box_sum(x, radius, -2), radius, -1) / counts


class BicubicUpsampler(_Weightless):
    """Bicubic interpolation of the features (``align_corners=False``); the image is unused.

    Bicubic weights are negative near the ends of their support, so an output may overshoot
    the range of its neighbouring features (ringing at feature edges). The overshoot is kept:
    clamping would need a range per channel that features, unlike images, do not have.
    """

    name = 'bicubic'
    uses_image = False

    def forward(self, image: Tensor | None, features: Tensor, output_size: Size) -> Tensor:
        """Upsamples one map.

        Args:
            image: Unused (may be ``None``; checked when given).
            features: (B, C, h, w).
            output_size: (H', W'); ``None`` for the image's size.

        Returns:
            (B, C, H', W') in the features' dtype.
        """
        _, features, size = self._checked(image, features, output_size)
        return F.interpolate(features, size=size, mode='bicubic', align_corners=False)


class GuidedFilterUpsampler(_Weightless):
    """He et al.'s guided filter (ECCV 2010, TPAMI 2013) of the bilinearly upsampled features.

    The features are upsampled bilinearly to the output size, then each channel is filtered
    as an input ``p`` with the image (resized to the output size) as the guide ``I``: in every
    (2r+1)^2 window ``k`` the filter fits ``p ~ a_k . I + b_k`` by ridge regression,

        ``a_k = (Cov_k(I) + eps Id)^-1 Cov_k(I, p)``, ``b_k = mean_k(p) - a_k . mean_k(I)``,

    and each pixel averages the fits of the windows that contain it:
    ``q_i = mean_k(a)_i . I_i + mean_k(b)_i``. With a colour guide ``Cov_k(I)`` is the
    3 x 3 covariance of the window, inverted in closed form for every pixel at once; a grey
    guide is the channel mean of the normalised image. Window means come from cumulative
    sums (O(1) per pixel for any radius) and are divided by the pixels a border window really
    holds. The result is invariant to adding constants to the guide or to a channel, which is
    used to centre both before the sums (float32 cumulative sums then lose little).

    Defaults:
        ``eps``: He et al. use eps = 0.1^2 to 0.4^2 for [0, 1] images; 0.1^2 (edges of about
        a tenth of the intensity range and more are kept, the least smoothing of them, since
        the point here is to snap blurred feature edges to image edges) is
        (0.1 / 0.226)^2 ~= 0.196 in ImageNet-normalised units. The NAF repository's classical
        baselines (``config/model/jbf.yaml``: kornia's joint bilateral filter, sigma_color
        0.1 on the normalised image) are sharper still, for denoising.
        ``radius``: one feature cell in output pixels (the upsampling factor, rounded; at
        least 1): bilinear interpolation spreads a feature edge over about two cells, so a
        window of 2r+1 pixels spans the blurred transition and the image edge inside it.

    Features are processed a few channels at a time (``_CHUNK_ELEMENTS``), so a 1024 x 1024
    output of 384 channels needs the result plus one chunk's temporaries (about 256 MiB).

    Args:
        radius: Window radius in output pixels; ``None``: the upsampling factor, per call.
        eps: Regularisation in squared normalised-image units (larger: smoother, less edge
            aware; as eps grows the output tends to the box mean of the box mean of the
            bilinear features).
        guide: ``'color'`` (3 x 3 covariance per pixel) or ``'gray'``.
    """

    name = 'guided_filter'
    uses_image = True

    def __init__(
        self,
        radius: int | None = None,
        eps: float = (0.1 / _NORMALISED_UNIT) ** 2,
        guide: str = 'color',
    ) -> None:
        super().__init__()
        if radius is not None and (isinstance(radius, bool) or int(radius) != radius or radius < 0):
            raise ValueError(f'radius must be None or an int >= 0, got {radius!r}')
        if not eps > 0:
            raise ValueError(f'eps must be positive, got {eps!r}')
        guide = str(guide).lower().replace('colour', 'color').replace('grey', 'gray')
        if guide not in ('color', 'gray'):
            raise ValueError(f"guide must be 'color' or 'gray', got {guide!r}")
        self.radius = None if radius is None else int(radius)
        self.eps = float(eps)
        self.guide = guide

    def extra_repr(self) -> str:
        return f'radius={self.radius}, eps={self.eps:.4g}, guide={self.guide!r}'

    def window_radius(self, features_size: Size, output_size: Size) -> int:
        """The radius used for this call: the given one, else one feature cell in pixels."""
        if self.radius is not None:
            return self.radius
        factor = max(o / f for o, f in zip(output_size, features_size))
        return max(1, round(factor))

    def forward(self, image: Tensor | None, features: Tensor, output_size: Size) -> Tensor:
        """Upsamples one map.

        Args:
            image: (B, 3, H, W) ImageNet-normalised guide (required).
            features: (B, C, h, w).
            output_size: (H', W'); ``None`` for the image's size.

        Returns:
            (B, C, H', W') in the features' dtype.
        """
        image, features, size = self._checked(image, features, output_size)
        dtype = _work_dtype(features)
        r = self.window_radius(tuple(features.shape[-2:]), size)
        guide = resize_guide(image.to(dtype), size)
        if self.guide == 'gray':
            guide = guide.mean(1, keepdim=True)
        guide = guide - guide.mean((-2, -1), keepdim=True)
        k = guide.shape[1]

        mean_guide = box_mean(guide, r)  # (B, k, H', W')
        inverse = self._inverse_covariance(guide, mean_guide, r)  # (B, k, k, H', W')

        low = features.to(dtype)
        offset = low.mean((-2, -1), keepdim=True)  # bilinear keeps constants: add back after
        low = low - offset
        b, c = low.shape[:2]
        out = torch.empty((b, c, *size), dtype=dtype, device=features.device)
        # A box mean of the k products per channel holds about four copies of them at once
        # (products, cumulative sums, sums, means), beside p, its mean and the intercepts.
        per_channel = (5 * k + 6) * b * size[0] * size[1]
        chunk = max(1, _CHUNK_ELEMENTS // per_channel)
        for start in range(0, c, chunk):
            p = F.interpolate(
                low[:, start : start + chunk], size=size, mode='bilinear', align_corners=False
            )
            mean_p = box_mean(p, r)  # (B, c', H', W')
            # Window sums of I_j p for each guide channel j: (B, k, c', H', W').
            mean_ip = box_mean(guide[:, :, None] * p[:, None], r)
            del p
            # Cov(I_j, p), then a_i = sum_j inverse_ij Cov(I_j, p), b = mean(p) - a . mean(I),
            # as fused multiply-adds (einsum would reorder the maps into small matrix products,
            # several times slower; out-of-place, so autograd can differentiate them).
            cov_ip = [
                torch.addcmul(mean_ip[:, j], mean_guide[:, j, None], mean_p, value=-1)
                for j in range(k)
            ]
            del mean_ip
            intercept = mean_p
            q = None
            for i in range(k):
                a_i = cov_ip[0] * inverse[:, i, 0, None]
                for j in range(1, k):
                    a_i = torch.addcmul(a_i, cov_ip[j], inverse[:, i, j, None])
                intercept = torch.addcmul(intercept, a_i, mean_guide[:, i, None], value=-1)
                term = box_mean(a_i, r) * guide[:, i, None]
                q = term if q is None else q + term
            del cov_ip
            q = q + box_mean(intercept, r)
            out[:, start : start + chunk] = q
        out += offset
        return out.to(features.dtype)

    def _inverse_covariance(self, guide: Tensor, mean_guide: Tensor, r: int) -> Tensor:
        """(Cov(I) + eps Id)^-1 of every window, (B, k, k, H', W'), in closed form."""
        k = guide.shape[1]
        if k == 1:
            var = box_mean(guide * guide, r) - mean_guide * mean_guide
            return (1.0 / (var + self.eps))[:, :, None]
        cov = {}
        for i in range(3):
            for j in range(i, 3):
                second_moment = box_mean(guide[:, i] * guide[:, j], r)
                cov[i, j] = second_moment - mean_guide[:, i] * mean_guide[:, j]
                if i == j:
                    cov[i, j] = cov[i, j] + self.eps
        a, b, c = cov[0, 0], cov[0, 1], cov[0, 2]
        d, e, f = cov[1, 1], cov[1, 2], cov[2, 2]
        # The adjugate of the symmetric [[a, b, c], [b, d, e], [c, e, f]]; the matrix is
        # positive definite (a covariance plus eps Id), so the determinant is positive.
        adj00, adj01, adj02 = d * f - e * e, c * e - b * f, b * e - c * d
        adj11, adj12, adj22 = a * f - c * c, b * c - a * e, a * d - b * b
        det = a * adj00 + b * adj01 + c * adj02
        rows = [[adj00, adj01, adj02], [adj01, adj11, adj12], [adj02, adj12, adj22]]
        return torch.stack([torch.stack(row, 1) for row in rows], 1) / det[:, None, None]


class JointBilateralUpsampler(_Weightless):
    """Kopf et al.'s joint bilateral upsampling (SIGGRAPH 2007) of the features.

    Each output pixel ``p`` (at ``p_low`` in feature-grid coordinates, cell centres at
    integers, as ``align_corners=False`` places them) is the normalised sum over the
    (2r+1) x (2r+1) feature cells ``q`` around the cell that contains it (cells off the
    grid are left out) of

        ``exp(-|p_low - q|^2 / (2 sigma_spatial^2))``
        ``* exp(-|I(p) - I_low(q)|^2 / (2 sigma_range^2)) * f(q)``,

    where ``I`` is the image resized to the output size and ``I_low`` the image averaged
    over each feature cell (area resize to the feature grid). The sum is computed exactly
    (weights normalised as a softmax of their logarithms, so a pixel whose colour is far from
    every cell still gets its nearest cells rather than 0 / 0). Pixels are grouped by the
    cell that holds them, as all pixels of a cell share its neighbours: each cell's output is
    one matrix product, (pixels, neighbours) weights by (neighbours, C) features, over a block
    of cell rows at a time (``_CHUNK_ELEMENTS``), so memory stays at the result plus one
    block.

    Defaults: ``radius=2`` is Kopf et al.'s 5 x 5 low-resolution window; ``sigma_spatial=1``
    cell keeps the outer ring at exp(-2) ~ 0.14 of the centre; ``sigma_range=0.5``
    normalised units (about 0.11 of the intensity range, 29 / 255) lets the texture inside a
    cell through while cells across an object edge weigh little. The NAF repository's JBF
    baseline uses sigma_color 0.1 (normalised) on pixel-to-pixel differences; a pixel differs
    from its cell's mean by more than from its neighbouring pixels, hence a wider kernel here.

    Args:
        radius: Neighbourhood radius in feature cells.
        sigma_spatial: Spatial Gaussian width in feature cells.
        sigma_range: Colour Gaussian width in ImageNet-normalised units (Euclidean over RGB).
    """

    name = 'joint_bilateral'
    uses_image = True

    def __init__(
        self, radius: int = 2, sigma_spatial: float = 1.0, sigma_range: float = 0.5
    ) -> None:
        super().__init__()
        if isinstance(radius, bool) or int(radius) != radius or radius < 0:
            raise ValueError(f'radius must be an int >= 0, got {radius!r}')
        if not (sigma_spatial > 0 and sigma_range > 0):
            raise ValueError(
                f'sigma_spatial and sigma_range must be positive, got {sigma_spatial!r} and '
                f'{sigma_range!r}'
            )
        self.radius = int(radius)
        self.sigma_spatial = float(sigma_spatial)
        self.sigma_range = float(sigma_range)

    def extra_repr(self) -> str:
        return (
            f'radius={self.radius}, sigma_spatial={self.sigma_spatial:.4g}, '
            f'sigma_range={self.sigma_range:.4g}'
        )

    def _axis(self, n_out: int, n_low: int, device: torch.device, dtype: torch.dtype) -> _Axis:
        """One axis of the output, grouped by the cell that holds each pixel."""
        r = self.radius
        position = (torch.arange(n_out, device=device, dtype=dtype) + 0.5) * (n_low / n_out) - 0.5
        cell = torch.floor(position + 0.5).clamp(0, n_low - 1).long()  # non-decreasing
        counts = torch.bincount(cell, minlength=n_low)
        first = counts.cumsum(0) - counts
        slots = int(counts.max())
        slot = torch.arange(slots, device=device)
        # Pixel of each (cell, slot); slots past a cell's pixels repeat one pixel (never read).
        pixel = (first[:, None] + slot).clamp(max=n_out - 1)  # (n_low, slots)
        offsets = torch.arange(-r, r + 1, device=device)
        neighbour = torch.arange(n_low, device=device)[:, None] + offsets  # (n_low, 2r+1)
        logits = -((position[pixel][:, :, None] - neighbour[:, None].to(dtype)) ** 2)
        logits = logits / (2 * self.sigma_spatial**2)
        off_grid = (neighbour < 0) | (neighbour >= n_low)
        logits = logits.masked_fill(off_grid[:, None], float('-inf'))
        flat = cell * slots + (torch.arange(n_out, device=device) - first[cell])
        return _Axis(first, counts, pixel, logits, flat)

    def forward(self, image: Tensor | None, features: Tensor, output_size: Size) -> Tensor:
        """Upsamples one map.

        Args:
            image: (B, 3, H, W) ImageNet-normalised guide (required).
            features: (B, C, h, w).
            output_size: (H', W'); ``None`` for the image's size.

        Returns:
            (B, C, H', W') in the features' dtype.
        """
        image, features, size = self._checked(image, features, output_size)
        dtype = _work_dtype(features)
        r, n = self.radius, 2 * self.radius + 1
        b, c, h, w = features.shape
        device = features.device
        image = image.to(dtype)
        guide = resize_guide(image, size)
        pad = (r, r, r, r)
        guide_low = F.pad(F.interpolate(image, size=(h, w), mode='area'), pad)
        feats = F.pad(features.to(dtype), pad)
        ys = self._axis(size[0], h, device, dtype)
        xs = self._axis(size[1], w, device, dtype)
        py, px = ys.pixel.shape[1], xs.pixel.shape[1]
        # The guide's pixels of every column cell, (B, 3, H', w * px), gathered once. (Advanced
        # indexing: index_select along inner dimensions is ~15x slower on the CPU.)
        guide = guide[..., xs.pixel.reshape(-1)]
        range_scale = 1.0 / (2 * self.sigma_range**2)

        out = torch.empty((b, c, *size), dtype=dtype, device=device)
        # Per row of cells: distances and weights of each pixel to its n^2 cells (the
        # distances before summing over RGB), the product, its reordering and the neighbours.
        per_cell_row = b * w * (py * px * (4 * n * n + 2 * c) + 2 * n * n * (c + 3))
        block = max(1, _CHUNK_ELEMENTS // per_cell_row)
        for i0 in range(0, h, block):
            i1 = min(h, i0 + block)
            cells = (i1 - i0) * w
            # The n^2 neighbours of each cell of the block: (B, cells, n^2, C) and (.., 3).
            near_f = F.unfold(feats[:, :, i0 : i1 + 2 * r], n).view(b, c, n * n, cells)
            near_g = F.unfold(guide_low[:, :, i0 : i1 + 2 * r], n).view(b, 3, n * n, cells)
            # The block's pixels, cell by cell: (B, cells, py * px, 3).
            pix = guide[:, :, ys.pixel[i0:i1].reshape(-1)]
            pix = pix.view(b, 3, i1 - i0, py, w, px).permute(0, 2, 4, 3, 5, 1)
            pix = pix.reshape(b, cells, py * px, 1, 3)
            distance = (pix - near_g.permute(0, 3, 2, 1)[:, :, None]).square_().sum(-1)
            spatial = ys.logits[i0:i1, None, :, None, :, None] + xs.logits[None, :, None, :, None]
            logits = spatial.reshape(cells, py * px, n * n) - range_scale * distance
            del distance, pix
            weights = torch.softmax(logits, dim=-1)  # (B, cells, py * px, n^2)
            del logits
            # Contiguous neighbours: batched products over a batch stride of 1 are ~20x slower.
            values = weights @ near_f.permute(0, 3, 2, 1).contiguous()  # (B, cells, py*px, C)
            del weights
            values = values.view(b, i1 - i0, w, py, px, c).permute(0, 5, 1, 3, 2, 4)
            values = values.reshape(b, c, (i1 - i0) * py, w * px)
            y0 = int(ys.first[i0])
            y1 = int(ys.first[i1 - 1] + ys.counts[i1 - 1])
            if y1 > y0:
                rows = ys.flat[y0:y1] - i0 * py
                out[:, :, y0:y1] = values[:, :, rows[:, None], xs.flat]
        return out.to(features.dtype)


class _Axis(NamedTuple):
    """Output pixels of one axis grouped by their nearest feature cell (``slots`` each at
    most): ``first`` and ``counts`` (n_low,) of each cell's pixels, ``pixel`` (n_low, slots)
    their indices, ``logits`` (n_low, slots, 2r+1) their spatial log-weights to the cell's
    neighbours (-inf off the grid), ``flat`` (n_out,) each pixel's cell * slots + slot."""

    first: Tensor
    counts: Tensor
    pixel: Tensor
    logits: Tensor
    flat: Tensor
