"""The AnyUp feature upsampler (Wimmer et al., "AnyUp: Universal Feature Upsampling", ICLR 2026)."""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import (
    ATTENTION_KERNELS,
    DEFAULT_MAX_TILE_ELEMENTS,
    QueryBands,
    check_triton_importable,
    resolve_attention_kernel,
    window_pair_count,
    windowed_attention,
)
from .checkpoints import check_state_dict_fits
from .checks import (
    check_all_finite,
    check_feature_map,
    check_image,
    check_output_sizes,
    check_result_fits,
    check_same_batch_and_device,
    is_tracing,
)
from .device_budget import device_profile
from .fused_encoder import fused_encoder_forward, unfusable_reason
from .hub import (
    PUBLISHED_CHECKPOINTS,
    load_pretrained,
)
from .ieee_float32 import ieee_float32
from .layers import (
    CrossAttentionBlock,
    Encoder,
    LearnedFeatureUnification,
    ReflectPadConv2d,
    RotaryPositionEmbedding2d,
)
from .precision import compute_dtype
from .softmax_bounds import bound_is_free

__all__ = ['PUBLISHED_CHECKPOINTS', 'STAGES', 'AnyUp', 'StageRunner']

logger = logging.getLogger(__name__)

Size = tuple[int, int]

#: The forward's stages, in the order :meth:`AnyUp.upsample_maps` first runs them: the image,
#: query and key encoders once for all maps, the query convolution once per output size, then
#: feature unification, key aggregation and attention per map.
STAGES: tuple[str, ...] = (
    'encoders',
    'query conv',
    'feature unification',
    'aggregation',
    'attention',
)

#: Runs one stage: ``runner(stage_name, fn, *args)`` must return ``fn(*args)`` (a benchmark
#: times it, for example).
StageRunner = Callable[..., Any]


def _run_stage(name: str, fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


@functools.lru_cache(maxsize=64)
def _warn_unfused(reason: str) -> None:
    """Says once per reason that inference runs the encoder modules instead of the fused path."""
    logger.warning(
        'AnyUp: the fused encoder path does not apply (%s); running the modules, which is '
        'slower but computes what they define',
        reason,
    )


def _conv_macs_per_pixel(module: nn.Module) -> int:
    """Multiply-adds per output pixel of every convolution in ``module`` (its weights' size)."""
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, nn.Conv2d))


class AnyUp(nn.Module):
    """Upsamples features of any encoder to any resolution, guided by the image.

    The output is, at every pixel, a convex combination of the input feature vectors within a
    local window, so it stays in the encoder's feature space. Attention is computed only over
    each query's window (see :mod:`anyup_plugin.core.attention`) and tiled, so memory
    stays bounded at any output size. Under ``torch.no_grad`` the full-resolution encoders
    run a fused, chunked path (see :mod:`anyup_plugin.core.fused_encoder`); with gradients
    enabled the standard modules run, so training and fine-tuning work as usual.

    Parameter names match the published checkpoints, which load with ``load_state_dict``.

    Args:
        qk_dim: Query/key width ``d``.
        num_heads: Attention heads (``d`` must be divisible by it).
        lfu_kernel_size: Basis filter size of the feature unification.
        window_ratio: Attention window half-size relative to the image; ``<= 0`` for global
            attention.
        num_groups: GroupNorm groups in the residual blocks.
        max_tile_elements: Upper bound on the attention logits computed at once.
        attention_kernel: How the attention is computed, one of
            :data:`~anyup_plugin.core.attention.ATTENTION_KERNELS`: ``'matmul'``
            tiles (the fewest multiply-adds, the fastest on the CPU), ``'sdpa'`` tiles
            (PyTorch's fused scaled-dot-product kernels, per head), ``'triton'`` (fused
            Triton kernels on CUDA, with a Triton backward; not yet run on GPU hardware) or
            ``'auto'`` (the default, ``'matmul'`` for now, see
            :func:`~anyup_plugin.core.attention.resolve_attention_kernel`). All are
            exact. ``'triton'`` needs triton installed (checked here) and CUDA tensors
            (checked at the first call).
        allow_tf32: Let CUDA compute float32 convolutions and matrix products in TF32 as the
            global flags say (cuDNN's convolutions do by default), about 1e-3 relative error.
            By default (``False``) every call on CUDA runs within
            :func:`~anyup_plugin.core.ieee_float32.ieee_float32`, IEEE float32 throughout,
            the flags restored afterwards. Under ``torch.compile`` the flags in force at
            compile time apply: compile and run within ``ieee_float32()`` for exactness.
        finite_check_waits: On CUDA, check the inputs for NaN and infinities with one
            host-device synchronisation per call and raise a ``ValueError`` naming the bad
            input. By default (``False``) the check is an asynchronous device assertion, no
            synchronisation, that fails at a later CUDA call and leaves the CUDA context
            unusable (see :func:`~anyup_plugin.core.checks.check_all_finite`). The CPU
            always raises the ``ValueError``.

    Example:
        >>> model = AnyUp.from_pretrained('anyup_multi_backbone').eval()
        >>> hr = model(image, features)                 # (B, C, H, W)
        >>> hr = model(image, features, output_size=(224, 224))
        >>> maps = model(image, [f1, f2, f3, f4])        # one encoder pass, a list back
    """

    #: Parameters the published checkpoints hold but the forward pass never uses (the attention's
    #: output projection): kept so that the checkpoints load strictly, never trained.
    UNUSED_PARAMETER_PREFIXES: tuple[str, ...] = ('cross_decode.cross_attn.attention.out_proj.',)

    def __init__(
        self,
        qk_dim: int = 128,
        num_heads: int = 4,
        lfu_kernel_size: int = 5,
        window_ratio: float = 0.1,
        num_groups: int = 8,
        max_tile_elements: int = DEFAULT_MAX_TILE_ELEMENTS,
        attention_kernel: str = 'auto',
        allow_tf32: bool = False,
        finite_check_waits: bool = False,
    ) -> None:
        super().__init__()
        if qk_dim % num_heads != 0 or qk_dim % 4 != 0:
            raise ValueError(
                f'qk_dim must be divisible by num_heads ({num_heads}) and by 4, got {qk_dim}'
            )
        if not math.isfinite(window_ratio):
            raise ValueError(f'window_ratio must be finite, got {window_ratio}')
        if attention_kernel not in ATTENTION_KERNELS:
            raise ValueError(
                f'attention_kernel must be one of {ATTENTION_KERNELS}, got {attention_kernel!r}'
            )
        if attention_kernel == 'triton':
            check_triton_importable()
        self.attention_kernel = attention_kernel
        self.allow_tf32 = allow_tf32
        self.finite_check_waits = finite_check_waits
        self.qk_dim = qk_dim
        self.num_heads = num_heads
        self.window_ratio = float(window_ratio)
        self.max_tile_elements = max_tile_elements
        d, g = qk_dim, num_groups
        self.image_encoder = Encoder(nn.Conv2d(3, d, 1, bias=False), d, g)
        self.key_encoder = Encoder(nn.Conv2d(d, d, 1, bias=False), d, g)
        self.query_encoder = Encoder(nn.Conv2d(d, d, 1, bias=False), d, g)
        self.key_features_encoder = Encoder(LearnedFeatureUnification(d, lfu_kernel_size), d, g)
        self.cross_decode = CrossAttentionBlock(d, num_heads)
        self.aggregation = Encoder(ReflectPadConv2d(2 * d, d, 3), d, g)
        self.rope = RotaryPositionEmbedding2d(d)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        image: Tensor,
        features: Tensor | Sequence[Tensor],
        output_size: int | Size | Sequence[int | Size | None] | None = None,
    ) -> Tensor | list[Tensor]:
        """Upsamples ``features`` guided by ``image``.

        Args:
            image: (B, 3, H, W) guidance, normalised with ImageNet mean/std.
            features: (B, C, h, w) features of any encoder, any C >= 1; or a sequence of such
                maps (B, C_i, h_i, w_i), for which the image, query and key encoders run once
                (see :meth:`upsample_maps`).
            output_size: (H', W') or an int for a square; default (H, W). With several maps,
                one size for all or a sequence with one size (or None) per map.

        Returns:
            (B, C, H', W') upsampled features in channels-last memory format, or a list of
            them in the order of ``features``.
        """
        if isinstance(features, Tensor):
            return self.upsample_maps(image, [features], output_size, names=('features',))[0]
        return self.upsample_maps(image, features, output_size)

    def upsample_maps(
        self,
        image: Tensor,
        features: Sequence[Tensor],
        output_size: int | Size | Sequence[int | Size | None] | None = None,
        run_stage: StageRunner | None = None,
        names: Sequence[str] | None = None,
    ) -> list[Tensor]:
        """Upsamples several maps with one pass of the full-resolution encoders.

        Runs :data:`STAGES`: the encoders once, the query convolution once per distinct
        output size, feature unification and aggregation once per distinct map (the same
        tensor given twice, e.g. at two sizes, counts once) and the attention per map. Each
        result equals what a call with that map alone returns.

        Args:
            image: (B, 3, H, W) guidance.
            features: Maps (B, C_i, h_i, w_i).
            output_size: One size for all maps or one per map (see :meth:`forward`).
            run_stage: Called as ``run_stage(name, fn, *args)`` for every stage and must
                return ``fn(*args)``; default: just call it.
            names: Argument names of the maps in error messages; default ``features[i]``.

        Returns:
            One (B, C_i, H'_i, W'_i) map per input map.
        """
        maps, sizes = self._check_inputs(image, features, output_size, names)
        with self.float32_scope(image.device):
            return self._upsample_checked(image, maps, sizes, run_stage or _run_stage)

    def float32_scope(self, device: torch.device) -> contextlib.AbstractContextManager[None]:
        """The context a call on ``device`` runs in: IEEE float32 on CUDA unless TF32 is allowed.

        :func:`~anyup_plugin.core.ieee_float32.ieee_float32` on CUDA (outside tracing) when
        :attr:`allow_tf32` is false; otherwise nothing (TF32 does not exist on the CPU).
        """
        if device.type != 'cuda' or self.allow_tf32 or is_tracing():
            return contextlib.nullcontext()
        return ieee_float32()

    def _upsample_checked(
        self, image: Tensor, maps: list[Tensor], sizes: list[Size], run: StageRunner
    ) -> list[Tensor]:
        """:meth:`upsample_maps` after the inputs are checked."""
        query_sizes = list(dict.fromkeys(sizes))
        key_sizes = list(dict.fromkeys(tuple(f.shape[-2:]) for f in maps))
        lender, lender_out, lent = self._output_to_lend(image, maps, sizes)
        queries, keys = run('encoders', self.encode_guidance, image, query_sizes, key_sizes, lent)
        queries = dict(zip(query_sizes, queries))
        keys = dict(zip(key_sizes, keys))
        for size in query_sizes:
            # Rebinding frees the encoder's map once the conv has run.
            queries[size] = run('query conv', self.refine_queries, queries[size])
        last_use = {size: i for i, size in enumerate(sizes)}
        # A map given several times (a pyramid of one map) has its keys computed once, kept
        # until its last use.
        last_use_of_map = {id(feats): i for i, feats in enumerate(maps)}
        keys_of_map: dict[int, Tensor] = {}
        results = []
        for i, (feats, size) in enumerate(zip(maps, sizes)):
            map_keys = keys_of_map.pop(id(feats), None)
            if map_keys is None:
                unified = run('feature unification', self.unify_features, feats)
                map_keys = run(
                    'aggregation', self.aggregate_keys, keys[tuple(feats.shape[-2:])], unified
                )
            if last_use_of_map[id(feats)] > i:
                keys_of_map[id(feats)] = map_keys
            map_queries = queries[size]
            if isinstance(map_queries, QueryBands):
                # The last map of this size lets the attention free the bands it is done
                # with; the maps before it read a handle of their own.
                map_queries = queries.pop(size) if last_use[size] == i else map_queries.copy()
            out = lender_out if i == lender else None
            results.append(run('attention', self.attend, map_queries, map_keys, feats, out))
            del map_queries, out
        return results

    def _output_to_lend(
        self, image: Tensor, maps: Sequence[Tensor], sizes: Sequence[Size]
    ) -> tuple[int | None, Tensor | None, Tensor | None]:
        """The largest float32 output, allocated now so that the fused encoders can work in it.

        The encoders' working maps are dead once the query convolution has run, before any
        attention writes: lending them the output's memory faults its pages in once for both
        uses (on a VM, first touching memory costs about as much as the encoders' work on it).
        The lent pages stay resident from the encoders on, so lending must not raise the
        peak, which is the encoders' three working maps (d x H x W) or the whole output. While
        the attention starts, the lent part of the output and the convolved queries are
        resident: with two lent maps that is still three maps, so up to two are lent whenever
        the output holds them; all three only when the output is at least four such maps.

        Returns:
            ``(index of the map, its (B, C, H', W') channels-last output, the flat float32
            memory lent to the encoders)``, or ``(None, None, None)`` off the fused path, for a
            float64 model, when no output is float32, or when it is smaller than one working
            map.
        """
        # The encoders work in the lent memory in their compute dtype: only a float32 model lends.
        float32_model = compute_dtype(*(p.dtype for p in self.parameters())) == torch.float32
        if torch.is_grad_enabled() or is_tracing() or not float32_model:
            return None, None, None
        candidates = [
            (f.shape[1] * h * w, i)
            for i, (f, (h, w)) in enumerate(zip(maps, sizes))
            if f.dtype == torch.float32
        ]
        working_map = self.qk_dim * image.shape[-2] * image.shape[-1]
        if not candidates or max(candidates)[0] < working_map:
            return None, None, None
        per_image, index = max(candidates)
        lent = working_map * (
            3 if per_image >= 4 * working_map else min(2, per_image // working_map)
        )
        (height, width), channels = sizes[index], maps[index].shape[1]
        out = image.new_empty(image.shape[0], height, width, channels, dtype=torch.float32)
        return index, out.permute(0, 3, 1, 2), out.view(-1)[:lent]

    def _check_inputs(
        self,
        image: Tensor,
        features: Sequence[Tensor],
        output_size: object,
        names: Sequence[str] | None,
    ) -> tuple[list[Tensor], list[Size]]:
        """Checks every input (each map by name) and the memory of the result."""
        check_image(image, 'image', values=False)
        if isinstance(features, (str, bytes)) or not isinstance(features, Sequence):
            raise TypeError(
                'features must be a torch.Tensor or a sequence of them, got '
                f'{type(features).__name__}'
            )
        maps = list(features)
        if not maps:
            raise ValueError('features must hold at least one feature map, got an empty sequence')
        names = list(names) if names is not None else [f'features[{i}]' for i in range(len(maps))]
        for feats, name in zip(maps, names):
            check_feature_map(feats, name, values=False)
            check_same_batch_and_device(image, feats, 'image', name)
        # None: the check's own rule (wait on the CPU, an asynchronous assertion elsewhere).
        wait = True if self.finite_check_waits else None
        check_all_finite([(image, 'image'), *zip(maps, names)], wait=wait)
        sizes = check_output_sizes(output_size, len(maps), image.shape[-2:])
        self._check_result_fits(image, maps, sizes)
        return maps, sizes

    def _check_result_fits(self, image: Tensor, maps: list[Tensor], sizes: list[Size]) -> None:
        """Fails before allocating when the outputs and query maps cannot fit in memory."""
        batch, float_bytes = image.shape[0], 4
        outputs = sum(
            batch * f.shape[1] * h * w * max(f.element_size(), float_bytes)
            for f, (h, w) in zip(maps, sizes)
        )
        # Each distinct output size holds the pooled query map and its convolution.
        queries = sum(2 * batch * self.qk_dim * h * w * float_bytes for h, w in set(sizes))
        shapes = ', '.join(f'({batch}, {f.shape[1]}, {h}, {w})' for f, (h, w) in zip(maps, sizes))
        check_result_fits(
            outputs + queries, image.device, f'the upsampled output ({shapes}) with its queries'
        )

    def encode_guidance(
        self,
        image: Tensor,
        query_sizes: Sequence[Size],
        key_sizes: Sequence[Size],
        memory: Tensor | None = None,
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Stage ``encoders``: the image, query and key encoders at full resolution.

        Under ``torch.no_grad`` (and outside tracing) the fused, chunked path runs (see
        :mod:`anyup_plugin.core.fused_encoder`), except on CUDA when the modules' whole maps
        fit in memory (:mod:`anyup_plugin.core.device_budget`), if the encoders have the
        structure it implements (:func:`~anyup_plugin.core.fused_encoder.unfusable_reason`; a
        warning says once why not); otherwise the modules themselves.

        Args:
            image: (B, 3, H, W) guidance.
            query_sizes: (H', W') sizes to pool the queries to.
            key_sizes: (h, w) sizes to pool the keys to.
            memory: Contiguous float32 memory the fused path may work in (see
                :func:`~anyup_plugin.core.fused_encoder.fused_encoder_forward`); unpooled
                queries may then be views of it.

        Returns:
            One (B, d, H', W') query map per query size and one (B, d, h, w) key map per key
            size.
        """
        if (
            not torch.is_grad_enabled()
            and not is_tracing()
            and not self._encoder_modules_fit(image)
        ):
            encoders = (self.image_encoder, self.query_encoder, self.key_encoder, self.rope)
            reason = unfusable_reason(*encoders)
            if reason is None:
                return fused_encoder_forward(
                    image, *encoders, query_sizes, key_sizes, memory=memory
                )
            _warn_unfused(reason)
        enc = self.rope(self.image_encoder(image))
        query_map = self.query_encoder(enc)
        key_map = self.key_encoder(enc)
        return (
            [F.adaptive_avg_pool2d(query_map, size) for size in query_sizes],
            [F.adaptive_avg_pool2d(key_map, size) for size in key_sizes],
        )

    def _encoder_modules_fit(self, image: Tensor) -> bool:
        """Whether the device runs the encoder modules on whole maps of this (B, 3, H, W) image.

        On CUDA the modules are a few dozen kernels where the fused path's chunks are hundreds.
        """
        profile = device_profile(image.device)
        dtype = compute_dtype(*(p.dtype for p in self.image_encoder.parameters()))
        elements = image.shape[0] * self.qk_dim * image.shape[-2] * image.shape[-1]
        return profile.encoder_modules_fit(image.device, elements, dtype.itemsize)

    def refine_queries(self, queries: Tensor) -> Tensor | QueryBands:
        """Stage ``query conv``: (B, d, H', W') -> (B, d, H', W') channels-last.

        Without autograd (and outside tracing) the result comes as :class:`QueryBands`, bands
        of output rows convolved one at a time, which the attention releases as it passes
        them: the refined queries and the output then never exist in full at the same time.
        """
        conv = self.cross_decode.conv2d
        queries = queries.contiguous(memory_format=torch.channels_last)
        if torch.is_grad_enabled() or is_tracing():
            return conv(queries)
        profile = device_profile(queries.device)
        band_elements = profile.chunk_elements(
            profile.query_band_elements, queries.device, queries.element_size()
        )
        return QueryBands.convolve(queries, conv, band_elements)

    def unify_features(self, features: Tensor) -> Tensor:
        """Stage ``feature unification``: (B, C, h, w) features -> (B, d, h, w) descriptors."""
        return self.key_features_encoder(F.normalize(features, dim=1))

    def aggregate_keys(self, keys: Tensor, unified: Tensor) -> Tensor:
        """Stage ``aggregation``: pooled image keys and descriptors (B, d, h, w) -> keys."""
        return self.aggregation(torch.cat([keys, unified], dim=1))

    def attend(
        self,
        queries: Tensor | QueryBands,
        keys: Tensor,
        features: Tensor,
        out: Tensor | None = None,
    ) -> Tensor:
        """Stage ``attention``: windowed attention over the features, queries projected per tile.

        Args:
            queries: (B, d, H', W') refined queries (channels-last is free to permute), or
                :class:`QueryBands` of them, which the attention consumes.
            keys: (B, d, h, w) aggregated keys.
            features: (B, C, h, w) the values.
            out: Optional (B, C, H', W') channels-last tensor to write into (without autograd
                and outside tracing).

        Returns:
            (B, C, H', W') in channels-last memory format.
        """
        attn = self.cross_decode.cross_attn
        q_weight, q_bias, k_weight, k_bias = self.query_key_projections()
        keys = F.linear(self._rms_norm(keys.permute(0, 2, 3, 1), attn.norm_k), k_weight, k_bias)
        values = features.permute(0, 2, 3, 1).contiguous()

        def project_queries(q: Tensor, out: Tensor | None) -> Tensor:
            # RMS norm then projection, as projection then row scaling (the norm is one
            # factor per query): no normalised copy of the queries is made.
            q = q.to(compute_dtype(q.dtype, q_weight.dtype))
            # The norm's reduction allocates only one number per query.
            mean_sq = torch.linalg.vector_norm(q, dim=-1, keepdim=True).square() / q.shape[-1]
            inv_rms = torch.rsqrt(mean_sq + self._rms_eps(attn.norm_q, q.dtype))
            if out is None or torch.is_autocast_enabled(q.device.type):
                # Out of place: for autograd, or in autocast's lower precision.
                return torch.addcmul(q_bias, q @ q_weight.t(), inv_rms)
            torch.matmul(q, q_weight.t(), out=out)
            return out.mul_(inv_rms).add_(q_bias)

        if isinstance(queries, Tensor):
            queries = queries.permute(0, 2, 3, 1)
        logit_bound = None
        kernel = resolve_attention_kernel(self.attention_kernel, keys.device)
        # The tiles use a bound only without autograd; the Triton kernel never does.
        if bound_is_free(keys.device) and not torch.is_grad_enabled() and kernel != 'triton':
            logit_bound = self._logit_bound(q_weight, q_bias, keys)
        out = windowed_attention(
            queries,
            keys,
            values,
            self.window_ratio,
            self.num_heads,
            query_transform=project_queries,
            max_tile_elements=self.max_tile_elements,
            out=None if out is None else out.permute(0, 2, 3, 1),
            logit_bound=logit_bound,
            kernel=kernel,
        )
        return out.permute(0, 3, 1, 2)

    def _logit_bound(self, q_weight: Tensor, q_bias: Tensor, keys: Tensor) -> float:
        """An upper bound on ``|q_n . k_n|`` over every query, key (B, h, w, d) and head.

        An RMS-normalised query has norm at most ``sqrt(d)``, so head ``n``'s projected query
        has norm at most ``sigma_max(W_n) sqrt(d) + |b_n|`` (weights with the norm weight and
        scale folded in); the keys' head norms are taken as they are.
        """
        heads, d = self.num_heads, self.qk_dim
        dtype = compute_dtype(q_weight.dtype, keys.dtype)
        per_head = q_weight.detach().to(dtype).view(heads, d // heads, d)
        query_norm = torch.linalg.matrix_norm(per_head, ord=2) * math.sqrt(d)
        query_norm += q_bias.detach().to(dtype).view(heads, -1).norm(dim=-1)
        key_heads = keys.detach().to(dtype).reshape(-1, heads, d // heads)
        key_norm = key_heads.norm(dim=-1).amax(0)
        return float((query_norm * key_norm).max())

    def query_key_projections(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Query/key input projections with the RMS norm weights and 1/sqrt(head dim) folded in.

        Returns:
            ``q_weight`` (d, d), ``q_bias`` (d,), ``k_weight`` (d, d), ``k_bias`` (d,).
        """
        attn = self.cross_decode.cross_attn
        d = self.qk_dim
        scale = (d // self.num_heads) ** -0.5
        w, b = attn.attention.in_proj_weight, attn.attention.in_proj_bias
        q_weight = w[:d] * attn.norm_q.weight[None, :] * scale
        k_weight = w[d : 2 * d] * attn.norm_k.weight[None, :]
        return q_weight, b[:d] * scale, k_weight, b[d : 2 * d]

    @staticmethod
    def _rms_eps(norm: nn.RMSNorm, dtype: torch.dtype = torch.float32) -> float:
        """The RMS norm's epsilon: its own, else the machine epsilon of ``dtype``, the dtype it
        is computed in (PyTorch's default)."""
        return norm.eps if norm.eps is not None else torch.finfo(dtype).eps

    @classmethod
    def _rms_norm(cls, x: Tensor, norm: nn.RMSNorm) -> Tensor:
        """RMS normalisation over the last dim in float32 (float64 for float64 ``x`` or norm),
        without the weight (folded)."""
        x = x.to(compute_dtype(x.dtype, norm.weight.dtype))
        return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + cls._rms_eps(norm, x.dtype))

    def multiply_adds(
        self,
        image_size: Size,
        features: Sequence[tuple[int, int, int]],
        output_sizes: Sequence[Size],
    ) -> dict[str, int]:
        """Multiply-adds of every stage of one forward at batch 1, from the model's sizes.

        Counts every convolution, projection and windowed-attention product (logits and
        value sums over exactly each query's window), not the element-wise work.

        Args:
            image_size: Guidance (H, W).
            features: (C, h, w) of every map.
            output_sizes: (H', W') of every map.

        Returns:
            Multiply-adds per stage name of :data:`STAGES`.
        """
        pixels = image_size[0] * image_size[1]
        d = self.qk_dim
        encoders = (self.image_encoder, self.query_encoder, self.key_encoder)
        counts = dict.fromkeys(STAGES, 0)
        counts['encoders'] = pixels * sum(_conv_macs_per_pixel(e) for e in encoders)
        for h, w in set(map(tuple, output_sizes)):
            counts['query conv'] += h * w * self.cross_decode.conv2d.weight.numel()
        lfu = self.key_features_encoder
        for (c, h, w), (out_h, out_w) in zip(features, output_sizes):
            counts['feature unification'] += (
                h
                * w
                * (
                    c * lfu.first_layer.basis.numel()
                    + sum(_conv_macs_per_pixel(b) for b in lfu.blocks)
                )
            )
            counts['aggregation'] += h * w * _conv_macs_per_pixel(self.aggregation)
            pairs = window_pair_count((out_h, out_w), (h, w), self.window_ratio)
            counts['attention'] += (out_h * out_w + h * w) * d * d + pairs * (d + c)
        return counts

    def set_trainable(self, trainable: bool = True) -> AnyUp:
        """Sets ``requires_grad`` of every parameter the forward pass uses to ``trainable``.

        The unused parameters (:attr:`UNUSED_PARAMETER_PREFIXES`) always end up frozen, so that
        distributed training never waits for gradients that cannot come.
        """
        for name, param in self.named_parameters():
            param.requires_grad_(trainable and not name.startswith(self.UNUSED_PARAMETER_PREFIXES))
        return self

    # ------------------------------------------------------------------ weights
    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ):
        """Loads a state dict with the published key names.

        With ``strict=True`` (the default) a missing, unexpected or mis-shaped key raises
        :class:`~anyup_plugin.core.checkpoints.CheckpointMismatchError` (a ``RuntimeError``, as
        torch's, and a ``ValueError``) naming the offending keys.
        """
        if strict:
            check_state_dict_fits(state_dict, self.state_dict(), 'AnyUp checkpoint', 'this AnyUp')
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        map_location: str | torch.device = 'cpu',
        **kwargs: Any,
    ) -> AnyUp:
        """Builds an AnyUp model for published or local weights and loads them.

        The architecture comes from the weights: widths from the tensor shapes, the rest from
        the JSON file the trainer writes beside its exports (see :mod:`anyup_plugin.core.hub`),
        else the published values; ``kwargs`` override both.

        Args:
            name_or_path: A local checkpoint file (a plain state dict, or a dict holding one
                under ``'state_dict'`` or ``'model'``), or a published name
                (``'anyup_paper'``, ``'anyup_multi_backbone'``), downloaded into torch's hub
                cache when the machine is online.
            map_location: The device to load the weights to and to build the model on
                (``'cpu'``, ``'cuda'``, ``torch.device('cuda', 1)``, ``'meta'`` for shapes only).
            **kwargs: Passed to the constructor (e.g. ``window_ratio``).

        Returns:
            The model on ``map_location``, in eval mode.

        Raises:
            FileNotFoundError: A path that does not exist, or a published name that is not
                cached and cannot be downloaded (the message says where to put the file).
            CheckpointReadError: The file cannot be read (truncated, corrupt, not a
                ``torch.save`` file); the message names it and what a valid one is.
            CheckpointMismatchError: The weights do not fit the model (every key named).
        """
        return load_pretrained(cls, name_or_path, map_location=map_location, **kwargs)
