"""The AnyUp feature upsampler (Wimmer et al., "AnyUp: Universal Feature Upsampling", ICLR 2026)."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checks import (
    check_feature_map,
    check_image,
    check_output_size,
    check_same_batch_and_device,
)
from .fused_encoder import fused_encoder_forward
from .layers import (
    CrossAttentionBlock,
    LearnedFeatureUnification,
    ReflectPadConv2d,
    RotaryPositionEmbedding2d,
    make_encoder,
)
from .window_attention import (
    DEFAULT_MAX_TILE_ELEMENTS,
    dense_window_attention_reference,
    windowed_attention,
)

__all__ = ['PUBLISHED_CHECKPOINTS', 'AnyUp']

logger = logging.getLogger(__name__)

#: The published checkpoints (CC-BY-4.0, by the AnyUp authors), by name.
PUBLISHED_CHECKPOINTS: dict[str, str] = {
    'anyup_paper': 'https://github.com/wimmerth/anyup/releases/download/checkpoint/anyup_paper.pth',
    'anyup_multi_backbone': (
        'https://github.com/wimmerth/anyup/releases/download/checkpoint_v2/anyup_multi_backbone.pth'
    ),
}


class AnyUp(nn.Module):
    """Upsamples features of any encoder to any resolution, guided by the image.

    The output is, at every pixel, a convex combination of the input feature vectors within a
    local window, so it stays in the encoder's feature space. Attention is computed only over
    each query's window (see :mod:`anyup_plugin.core.window_attention`) and tiled, so memory
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

    Example:
        >>> model = AnyUp.from_pretrained('anyup_multi_backbone').eval()
        >>> hr = model(image, features)                 # (B, C, H, W)
        >>> hr = model(image, features, output_size=(224, 224))
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
    ) -> None:
        super().__init__()
        if qk_dim % num_heads != 0 or qk_dim % 4 != 0:
            raise ValueError(
                f'qk_dim must be divisible by num_heads ({num_heads}) and by 4, got {qk_dim}'
            )
        if not math.isfinite(window_ratio):
            raise ValueError(f'window_ratio must be finite, got {window_ratio}')
        self.qk_dim = qk_dim
        self.num_heads = num_heads
        self.window_ratio = float(window_ratio)
        self.max_tile_elements = max_tile_elements
        d, g = qk_dim, num_groups
        self.image_encoder = make_encoder(nn.Conv2d(3, d, 1, bias=False), d, g)
        self.key_encoder = make_encoder(nn.Conv2d(d, d, 1, bias=False), d, g)
        self.query_encoder = make_encoder(nn.Conv2d(d, d, 1, bias=False), d, g)
        self.key_features_encoder = make_encoder(
            LearnedFeatureUnification(d, lfu_kernel_size), d, g
        )
        self.cross_decode = CrossAttentionBlock(d, num_heads)
        self.aggregation = make_encoder(ReflectPadConv2d(2 * d, d, 3), d, g)
        self.rope = RotaryPositionEmbedding2d(d)

    # ------------------------------------------------------------------ forward
    def forward(
        self, image: Tensor, features: Tensor, output_size: int | tuple[int, int] | None = None
    ) -> Tensor:
        """Upsamples ``features`` guided by ``image``.

        Args:
            image: (B, 3, H, W) guidance, normalised with ImageNet mean/std.
            features: (B, C, h, w) features of any encoder, any C >= 1.
            output_size: (H', W') or an int for a square; default (H, W).

        Returns:
            (B, C, H', W') upsampled features, in channels-last memory format.
        """
        return self._upsample(image, features, output_size, reference=False)

    def reference_forward(
        self, image: Tensor, features: Tensor, output_size: int | tuple[int, int] | None = None
    ) -> Tensor:
        """The straightforward formulation, as in the published code: the parity reference.

        Runs the encoders module by module and the attention as dense masked attention over
        all ``H'W' x hw`` pairs (:func:`dense_window_attention_reference`). Same arguments and
        result as :meth:`forward`; memory grows with ``H' W' h w``, so use it for tests and
        benchmarks only.
        """
        return self._upsample(image, features, output_size, reference=True)

    def _upsample(
        self,
        image: Tensor,
        features: Tensor,
        output_size: int | tuple[int, int] | None,
        reference: bool,
    ) -> Tensor:
        check_image(image, 'image')
        check_feature_map(features, 'features')
        check_same_batch_and_device(image, features, 'image', 'features')
        out_h, out_w = check_output_size(output_size, image.shape[-2:])
        feat_h, feat_w = features.shape[-2:]

        fused = not torch.is_grad_enabled() and not reference
        queries, keys = self._encode_queries_and_keys(
            image, (out_h, out_w), (feat_h, feat_w), fused
        )
        keys = torch.cat([keys, self.key_features_encoder(F.normalize(features, dim=1))], dim=1)
        keys = self.aggregation(keys)
        # Rebinding ``queries`` frees the encoder's map once the conv has run.
        queries = self.cross_decode.conv2d(queries.contiguous(memory_format=torch.channels_last))

        attn = self.cross_decode.cross_attn
        q_weight, q_bias, k_weight, k_bias = self._query_key_projections()
        keys = F.linear(self._rms_norm(keys.permute(0, 2, 3, 1), attn.norm_k), k_weight, k_bias)
        # The conv output is channels-last, so this permute is a free view.
        queries = queries.permute(0, 2, 3, 1)
        values = features.permute(0, 2, 3, 1).contiguous()

        def project_queries(q: Tensor) -> Tensor:
            return F.linear(self._rms_norm(q, attn.norm_q), q_weight, q_bias)

        if reference:
            out = dense_window_attention_reference(
                project_queries(queries), keys, values, self.window_ratio, self.num_heads
            )
        else:
            out = windowed_attention(
                queries,
                keys,
                values,
                self.window_ratio,
                self.num_heads,
                query_transform=project_queries,
                max_tile_elements=self.max_tile_elements,
            )
        return out.permute(0, 3, 1, 2)

    def _encode_queries_and_keys(
        self, image: Tensor, out_size: tuple[int, int], feat_size: tuple[int, int], fused: bool
    ) -> tuple[Tensor, Tensor]:
        """Runs the full-resolution encoders: (B, d, H', W') queries, (B, d, h, w) keys."""
        if fused:
            return fused_encoder_forward(self, image, out_size, feat_size)
        enc = self.rope(self.image_encoder(image))
        queries = F.adaptive_avg_pool2d(self.query_encoder(enc), out_size)
        keys = F.adaptive_avg_pool2d(self.key_encoder(enc), feat_size)
        return queries, keys

    def _query_key_projections(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Query/key input projections with the RMS norm weights and 1/sqrt(head dim) folded in."""
        attn = self.cross_decode.cross_attn
        d = self.qk_dim
        scale = (d // self.num_heads) ** -0.5
        w, b = attn.attention.in_proj_weight, attn.attention.in_proj_bias
        q_weight = w[:d] * attn.norm_q.weight[None, :] * scale
        k_weight = w[d : 2 * d] * attn.norm_k.weight[None, :]
        return q_weight, b[:d] * scale, k_weight, b[d : 2 * d]

    @staticmethod
    def _rms_norm(x: Tensor, norm: nn.RMSNorm) -> Tensor:
        """RMS normalisation over the last dim in float32, without the weight (folded)."""
        x = x.float()
        eps = norm.eps if norm.eps is not None else torch.finfo(torch.float32).eps
        return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps)

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

        With ``strict=True`` (the default) a missing, unexpected or mis-shaped key raises a
        ``RuntimeError`` that names every offending key.
        """
        if strict:
            own = self.state_dict()
            missing = sorted(set(own) - set(state_dict))
            unexpected = sorted(set(state_dict) - set(own))
            mis_shaped = [
                f'{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}'
                for k in sorted(set(own) & set(state_dict))
                if tuple(state_dict[k].shape) != tuple(own[k].shape)
            ]
            if missing or unexpected or mis_shaped:
                lines = ['AnyUp checkpoint does not fit the model:']
                if missing:
                    lines.append(f'  missing keys ({len(missing)}): {", ".join(missing)}')
                if unexpected:
                    lines.append(f'  unexpected keys ({len(unexpected)}): {", ".join(unexpected)}')
                if mis_shaped:
                    lines.append(f'  mis-shaped keys ({len(mis_shaped)}): {"; ".join(mis_shaped)}')
                raise RuntimeError('\n'.join(lines))
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        map_location: str | torch.device = 'cpu',
        **kwargs: Any,
    ) -> AnyUp:
        """Builds an AnyUp model and loads published or local weights.

        Args:
            name_or_path: A local checkpoint file (a plain state dict, or a dict holding one
                under ``'state_dict'`` or ``'model'``), or a published name
                (``'anyup_paper'``, ``'anyup_multi_backbone'``), downloaded into torch's hub
                cache when the machine is online.
            map_location: Where to load the tensors.
            **kwargs: Passed to the constructor (e.g. ``window_ratio``).

        Returns:
            The model, in eval mode.

        Raises:
            FileNotFoundError: A path that does not exist, or a published name that is not
                cached and cannot be downloaded (the message says where to put the file).
        """
        state_dict = load_checkpoint_state_dict(name_or_path, map_location)
        model = cls(**kwargs)
        model.load_state_dict(state_dict)
        return model.eval()


def _published_cache_path(name: str) -> str:
    url = PUBLISHED_CHECKPOINTS[name]
    return os.path.join(torch.hub.get_dir(), 'checkpoints', os.path.basename(url))


def load_checkpoint_state_dict(
    name_or_path: str | os.PathLike, map_location: str | torch.device = 'cpu'
) -> dict[str, Tensor]:
    """Reads an AnyUp state dict from a local file or a published name (see ``from_pretrained``).

    Files are read with ``torch.load(weights_only=True)``: a checkpoint can hold tensors and
    plain containers, never code.
    """
    name = os.fspath(name_or_path)
    if name in PUBLISHED_CHECKPOINTS and not os.path.isfile(name):
        cached = _published_cache_path(name)
        if not os.path.isfile(cached):
            os.makedirs(os.path.dirname(cached), exist_ok=True)
            try:
                torch.hub.download_url_to_file(PUBLISHED_CHECKPOINTS[name], cached, progress=False)
            except Exception as err:
                raise FileNotFoundError(
                    f'Could not download the published AnyUp checkpoint {name!r} '
                    f'({type(err).__name__}: {err}). Download it on a machine with internet '
                    f'from {PUBLISHED_CHECKPOINTS[name]} and place it at {cached}, or pass the '
                    'local file path instead of the name.'
                ) from err
        name = cached
    elif not os.path.isfile(name):
        raise FileNotFoundError(
            f'AnyUp checkpoint {name!r} is neither an existing file nor a published name '
            f'({", ".join(PUBLISHED_CHECKPOINTS)})'
        )
    state = torch.load(name, map_location=map_location, weights_only=True)
    for key in ('state_dict', 'model'):
        if isinstance(state, Mapping) and key in state and isinstance(state[key], Mapping):
            state = state[key]
    if not isinstance(state, Mapping):
        raise ValueError(f'{name} does not hold a state dict (got {type(state).__name__})')
    return dict(state)
