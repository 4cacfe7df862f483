"""Building blocks of AnyUp, named so that the published checkpoints load as they are."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checks import is_tracing
from .constant_cache import shape_constant
from .device_budget import CPU_PROFILE, device_profile
from .precision import compute_dtype
from .softmax_bounds import bound_is_free, softmax_needs_shift

__all__ = [
    'ReflectPadConv2d',
    'CrossAttention',
    'CrossAttentionBlock',
    'Encoder',
    'LearnedFeatureUnification',
    'ResBlock',
    'RotaryPositionEmbedding2d',
]


class ResBlock(nn.Module):
    """Pre-activation residual block: ``x + conv2(SiLU(norm2(conv1(SiLU(norm1(x))))))``.

    The layers live in ``block`` at the positions the published checkpoints name
    (``block.0``, ``block.2``, ``block.3``, ``block.5``); use the named accessors
    (:attr:`norm1`, :attr:`conv1`, :attr:`norm2`, :attr:`conv2`) rather than positions.

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

    @property
    def norm1(self) -> nn.GroupNorm:
        """The GroupNorm before the first 1x1 convolution."""
        return self.block[0]

    @property
    def conv1(self) -> nn.Conv2d:
        """The first bias-free 1x1 convolution (d -> d)."""
        return self.block[2]

    @property
    def norm2(self) -> nn.GroupNorm:
        """The GroupNorm before the second 1x1 convolution."""
        return self.block[3]

    @property
    def conv2(self) -> nn.Conv2d:
        """The second bias-free 1x1 convolution (d -> d)."""
        return self.block[5]

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


class Encoder(nn.Sequential):
    """An AnyUp encoder: a first layer followed by residual blocks.

    The children are named ``0`` (the first layer), ``1``, ``2`` (the blocks), as in the
    published checkpoints; use :attr:`first_layer` and :attr:`blocks` rather than positions.

    Args:
        first_layer: Maps the input to ``channels`` channels.
        channels: Width ``d`` of the blocks.
        num_groups: GroupNorm groups of the blocks.
        num_blocks: Number of :class:`ResBlock` (two in the published models).
    """

    def __init__(
        self, first_layer: nn.Module, channels: int, num_groups: int = 8, num_blocks: int = 2
    ) -> None:
        super().__init__(first_layer, *(ResBlock(channels, num_groups) for _ in range(num_blocks)))

    @property
    def first_layer(self) -> nn.Module:
        """The layer that maps the input to ``d`` channels."""
        return self[0]

    @property
    def blocks(self) -> list[ResBlock]:
        """The residual blocks, in order."""
        return list(self)[1:]


#: Responses (pixels x C x d float32 numbers) the feature unification computes at once on
#: the CPU (cache-sized, see :data:`~anyup_plugin.core.device_budget.CPU_PROFILE`); CUDA takes
#: whole maps within a memory budget.
LFU_CHUNK_ELEMENTS = CPU_PROFILE.lfu_chunk_elements

#: Neighbourhood patches (C x k x k per pixel) unfolded at once by the feature unification on
#: the CPU: 2**22 (16 MiB of float32) bounds that copy at any C and image width.
LFU_PATCH_ELEMENTS = CPU_PROFILE.lfu_patch_elements


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

    Every softmax group lies within one pixel, so the responses are computed a few pixels at
    a time (a matrix product of each pixel's ``C`` neighbourhoods with the ``k * k`` basis),
    each group is normalised with its exact maximum, and memory stays bounded for any C.
    On the CPU (outside tracing) the maximum is skipped when the responses are provably small
    (see :meth:`response_bound` and :mod:`anyup_plugin.core.softmax_bounds`).

    Args:
        out_channels: Number of basis filters ``d``.
        kernel_size: Basis filter size ``k`` (odd).
        max_chunk_elements: Upper bound on the ``pixels * C * d`` responses computed at once;
            default: the device's (:func:`~anyup_plugin.core.device_budget.device_profile`:
            :data:`LFU_CHUNK_ELEMENTS` on the CPU, whole maps within a memory budget on CUDA).
    """

    def __init__(
        self, out_channels: int, kernel_size: int = 5, max_chunk_elements: int | None = None
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f'kernel_size must be odd, got {kernel_size}')
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.max_chunk_elements = max_chunk_elements
        self.basis = nn.Parameter(torch.randn(out_channels, 1, kernel_size, kernel_size))

    def forward(self, features: Tensor) -> Tensor:
        """(B, C, h, w) features, unit-normalised over C -> (B, d, h, w) descriptors.

        The descriptors are float32, or float64 for a float64 basis.
        """
        # The softmax runs over exponentials of responses: keep it in float32 under autocast.
        with torch.autocast(features.device.type, enabled=False):
            return self._unify(features.to(compute_dtype(self.basis.dtype)))

    def _unify(self, features: Tensor) -> Tensor:
        b, c, h, w = features.shape
        d, k = self.out_channels, self.kernel_size
        pad = k // 2
        basis_t = self.basis.to(features.dtype).reshape(d, k * k).t()  # (k*k, d)
        taps, inv_taps = _taps_inside_and_inverse(h, w, k, features.device, features.dtype)
        shift = True
        # Used with and without autograd alike, so that both give the same numbers: the key
        # encoder's group norms can amplify rounding differences in these descriptors a lot.
        if bound_is_free(features.device):
            shift = softmax_needs_shift(self.response_bound(features, taps))
        # Channels-last and zero-padded, so that every tap's shifted view is one slice; in
        # channels-last memory, since the patch copy then reads runs of channels (30 % faster).
        padded = F.pad(features, (pad, pad, pad, pad)).permute(0, 2, 3, 1).contiguous()
        # Cache-sized pieces on the CPU; on CUDA whole maps as far as memory allows, since
        # every piece costs a dozen kernel launches.
        profile = device_profile(features.device)
        size = features.element_size()
        patch_elements = profile.chunk_elements(profile.lfu_patch_elements, features.device, size)
        chunk_elements = self.max_chunk_elements
        if chunk_elements is None:
            chunk_elements = profile.chunk_elements(
                profile.lfu_chunk_elements, features.device, size
            )
        strip_rows = max(1, patch_elements // (b * c * k * k * w))
        # No larger than a strip: the response buffer is allocated at the chunk's size.
        chunk = max(1, min(chunk_elements // (b * c * d), min(strip_rows, h) * w))
        # Without autograd the patches and responses go into buffers reused by every strip
        # and chunk: fresh ones cost page faults comparable to the work on them.
        reuse = not torch.is_grad_enabled() and not is_tracing()
        if reuse:
            patch_memory = features.new_empty(b * min(strip_rows, h) * w * c * k * k)
            response_memory = features.new_empty(b * chunk * c * d)
        pieces = []
        for r0 in range(0, h, strip_rows):
            rows = min(strip_rows, h - r0)
            # (B, rows*w, C, k*k): every pixel's C neighbourhoods, zero outside the image. The
            # windows are strided views; one copy lays them out (twice as fast as stacking the
            # k*k shifted maps).
            windows = padded[:, r0 : r0 + rows + 2 * pad].unfold(1, k, 1).unfold(2, k, 1)
            strip_taps = inv_taps[r0 * w : (r0 + rows) * w, None, None]
            if reuse:
                patches = patch_memory[: windows.numel()].view(windows.shape).copy_(windows)
                patches = patches.view(b, rows * w, c, k * k).mul_(strip_taps)
            else:
                patches = windows.reshape(b, rows * w, c, k * k) * strip_taps
            out = response_memory if reuse else None
            for p0 in range(0, rows * w, chunk):
                pieces.append(self._unify_pixels(patches[:, p0 : p0 + chunk], basis_t, shift, out))
        out = torch.cat(pieces, dim=1) if len(pieces) > 1 else pieces[0]
        return out.view(b, h, w, d).permute(0, 3, 1, 2)

    def response_bound(self, features: Tensor, taps: Tensor | None = None) -> float:
        """An upper bound on every basis response's magnitude for these (B, C, h, w) features.

        A response is a filter's dot product with a ``k x k`` patch of one channel, divided by
        the ``t`` taps inside the image, so it is at most ``|basis| sqrt(t) max|x| / t``: the
        largest filter norm times the largest ``|x|``, over the square root of the fewest
        taps inside the image. (Unit-normalised features have ``max|x| <= 1``.)
        """
        dtype = compute_dtype(self.basis.dtype, features.dtype)
        if taps is None:
            taps = _taps_inside(*features.shape[-2:], self.kernel_size, features.device, dtype)
        basis_norm = self.basis.detach().to(dtype).flatten(1).norm(dim=1).max()
        largest = features.detach().abs().amax().to(dtype)
        return float(basis_norm * largest / taps.min().sqrt())

    def _unify_pixels(
        self, patches: Tensor, basis_t: Tensor, shift: bool = True, out: Tensor | None = None
    ) -> Tensor:
        """(B, n, C, k*k) tap-normalised patches -> (B, n, d) descriptors of those pixels.

        ``shift=False`` exponentiates the responses without subtracting their maximum (only
        when :meth:`response_bound` allows it). ``out``, without autograd, is flat memory of
        at least ``B * n * C * d`` elements for the responses.
        """
        b, n, c, _ = patches.shape
        d = self.out_channels
        # (B*n, C*d) responses in channel-major order, read as the published (d, C) groups.
        flat = patches.reshape(b * n * c, -1)
        if out is None:
            resp = flat @ basis_t
        else:
            resp = torch.mm(flat, basis_t, out=out[: b * n * c * d].view(b * n * c, d))
        resp = resp.view(b * n, d, c)
        if shift:
            top = resp.amax(dim=1, keepdim=True)
            resp = resp.sub_(top) if not resp.requires_grad else resp - top
        exp = resp.exp_() if not resp.requires_grad else resp.exp()
        # Output channel a averages group j's softmax over j: sum_j exp[a, j] / (C * sum[j]).
        weights = (exp.sum(dim=1, keepdim=True) * c).reciprocal_()  # (B*n, 1, C)
        if is_tracing():
            # The descriptors are about 1/d each, with deviations that can be 1e-3 of that
            # (random weights, many channels), and the next GroupNorm scales the deviations up
            # to unit size: a few float32 ulps here become 1e-4 of the model's output. PyTorch's
            # product sums the C terms to about one ulp, an exporter's runtime may not (ONNX
            # Runtime fuses the transposed product into a kernel with 5x the error at C = 384).
            # Summing in blocks of about sqrt(C) terms is as accurate whatever the runtime.
            return _sum_in_blocks(exp * weights).view(b, n, d)
        return torch.bmm(exp, weights.transpose(1, 2)).view(b, n, d)


def _sum_in_blocks(x: Tensor) -> Tensor:
    """(..., n) -> (...) sums over the last dim, as sums of blocks of about sqrt(n) terms.

    However a runtime orders each sum, every sum then adds about ``2 sqrt(n)`` numbers.
    """
    n = x.shape[-1]
    block = math.ceil(math.sqrt(n))
    whole = n - n % block
    if whole <= block:
        return x.sum(dim=-1)
    total = x[..., :whole].unflatten(-1, (whole // block, block)).sum(dim=-1).sum(dim=-1)
    return total + x[..., whole:].sum(dim=-1) if whole < n else total


@shape_constant()
def _taps_inside_and_inverse(
    h: int, w: int, kernel_size: int, device: torch.device, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """(h, w) taps inside the map (:func:`_taps_inside`) and (h*w,) their inverses.

    Kept per arguments: a dozen small operations (kernel launches on CUDA) per call otherwise.
    """
    taps = _taps_inside(h, w, kernel_size, device, dtype)
    return taps, 1 / taps.flatten()


def _taps_inside(
    h: int, w: int, kernel_size: int, device: torch.device, dtype: torch.dtype = torch.float32
) -> Tensor:
    """(h, w) number of a centred ``k x k`` filter's taps that fall inside an ``h x w`` map."""
    pad = kernel_size // 2

    def inside(n: int) -> Tensor:
        i = torch.arange(n, device=device)
        return ((i + pad).clamp(max=n - 1) - (i - pad).clamp(min=0) + 1).to(dtype)

    return inside(h)[:, None] * inside(w)[None, :]


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
    @shape_constant()
    def grid_coordinates(
        size: int, device: torch.device, dtype: torch.dtype = torch.float32
    ) -> Tensor:
        """Coordinates ``i / (size - 1)`` in ``dtype``, (size,); kept per arguments (read-only)."""
        return torch.linspace(0, 1, size, device=device, dtype=dtype)

    @property
    def compute_dtype(self) -> torch.dtype:
        """float32, or float64 for float64 frequencies: the dtype of the angles and rotation."""
        return compute_dtype(self.freqs.dtype)

    def angles(self, x: Tensor, y: Tensor) -> Tensor:
        """Angles ``x * freqs[0] + y * freqs[1]`` in :attr:`compute_dtype`, shape
        ``broadcast(x, y) + (d,)``."""
        freqs = self.freqs.to(self.compute_dtype)
        return x[..., None] * freqs[0] + y[..., None] * freqs[1]

    @staticmethod
    def rotate(x: Tensor, cos: Tensor, sin: Tensor, out: Tensor | None = None) -> Tensor:
        """``x * cos + rot(x) * sin`` along the last dim, ``rot(v) = [-v2, v1]``.

        Args:
            x: (..., d) vectors.
            cos, sin: Cosines and sines of their angles, broadcastable to ``x``.
            out: Optional tensor of ``x``'s shape to write into, half by half, without a
                rotated copy (not for autograd).
        """
        half = x.shape[-1] // 2
        if out is None:
            rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
            return x * cos + rotated * sin
        torch.mul(x, cos, out=out)
        out[..., :half].addcmul_(x[..., half:], sin[..., :half], value=-1)
        out[..., half:].addcmul_(x[..., :half], sin[..., half:])
        return out

    def forward(self, x: Tensor) -> Tensor:
        """(B, d, H, W) -> (B, d, H, W) with positions encoded (math in :attr:`compute_dtype`)."""
        _, _, h, w = x.shape
        dtype = self.compute_dtype
        angle = self.angles(
            self.grid_coordinates(h, x.device, dtype)[:, None],
            self.grid_coordinates(w, x.device, dtype)[None],
        )
        out = self.rotate(x.permute(0, 2, 3, 1).to(dtype), angle.cos(), angle.sin())
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
