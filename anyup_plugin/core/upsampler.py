"""One upsampling policy for every framework adapter: AnyUp or bilinear, frozen or trained.

The MMSegmentation necks, the Detectron2 backbone wrapper and any user script wrap
:class:`FeatureUpsampler` in a few lines instead of re-implementing how AnyUp is built
(checkpoint, published name or random initialisation), how it is frozen (eval mode kept,
no autograd graph when nothing needs gradients), the bilinear baseline, and the output
size of a stride (:func:`stride_output_size`).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .anyup import AnyUp
from .checks import check_output_sizes

__all__ = ['UPSAMPLER_METHODS', 'FeatureUpsampler', 'build_anyup', 'stride_output_size']

logger = logging.getLogger(__name__)

#: The methods :class:`FeatureUpsampler` implements: AnyUp and its bilinear baseline.
UPSAMPLER_METHODS: tuple[str, ...] = ('anyup', 'bilinear')

Size = tuple[int, int]


def stride_output_size(image_size: Sequence[int], stride: int) -> Size:
    """The output size of ``stride`` input pixels per output cell: ``ceil(H / s), ceil(W / s)``.

    Rounding up keeps every input pixel covered by an output cell, as backbones that pad the
    input to their patch size do.

    Args:
        image_size: Input (H, W).
        stride: Input pixels per output cell, >= 1.

    Returns:
        (ceil(H / stride), ceil(W / stride)).
    """
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise ValueError(f'stride must be an int >= 1, got {stride!r}')
    height, width = (int(s) for s in image_size[-2:])
    return math.ceil(height / stride), math.ceil(width / stride)


def build_anyup(
    checkpoint: str | os.PathLike | None = None, owner: str = 'AnyUp', **anyup_kwargs: Any
) -> AnyUp:
    """Builds AnyUp from weights, or randomly initialised with a warning.

    Args:
        checkpoint: A local weights file or a published name (see
            :meth:`AnyUp.from_pretrained`); ``None`` keeps the random initialisation.
        owner: Who builds it, named in the log messages (e.g. ``'AnyUpNeck'``).
        **anyup_kwargs: Constructor arguments (e.g. ``window_ratio``).

    Returns:
        The model (eval mode when loaded from weights).
    """
    if checkpoint is None or checkpoint == '':
        logger.warning(
            '%s: no checkpoint given, AnyUp keeps its random initialisation. Use '
            "'anyup_multi_backbone' or 'anyup_paper' (or a local .pth path) for the published "
            'weights.',
            owner,
        )
        return AnyUp(**anyup_kwargs)
    model = AnyUp.from_pretrained(checkpoint, **anyup_kwargs)
    logger.info('%s: loaded AnyUp weights from %s', owner, os.fspath(checkpoint))
    return model


class FeatureUpsampler(nn.Module):
    """Upsamples feature maps to given sizes with AnyUp guided by the image, or bilinearly.

    A frozen AnyUp trains no parameter, stays in eval mode whatever ``train()`` is called
    with, and records no autograd graph unless a feature map needs gradients (a backbone
    being fine-tuned). An unfrozen AnyUp trains with the rest of the model (its never-used
    parameters stay frozen, see :meth:`AnyUp.set_trainable`).

    Args:
        method: ``'anyup'`` or ``'bilinear'`` (the baseline; ``image`` is then unused).
        checkpoint: AnyUp weights (see :func:`build_anyup`); ignored by ``'bilinear'``.
        frozen: Keep AnyUp frozen (the probes' protocol); ``False`` fine-tunes it.
        align_corners: Bilinear only: passed to ``F.interpolate``.
        antialias: Bilinear only: passed to ``F.interpolate`` (matters when shrinking).
        owner: Named in log messages.
        **anyup_kwargs: AnyUp constructor arguments (e.g. ``window_ratio``).

    Shapes:
        image: (B, 3, H, W), ImageNet-normalised RGB.
        features: (B, C_i, h_i, w_i), one map or a sequence.
        output: (B, C_i, H'_i, W'_i) for each requested size, in the same form as ``features``.
    """

    def __init__(
        self,
        method: str = 'anyup',
        checkpoint: str | os.PathLike | None = None,
        frozen: bool = True,
        align_corners: bool = False,
        antialias: bool = False,
        owner: str = 'FeatureUpsampler',
        **anyup_kwargs: Any,
    ) -> None:
        super().__init__()
        method = str(method).lower()
        if method not in UPSAMPLER_METHODS:
            raise ValueError(f'method must be one of {UPSAMPLER_METHODS}, got {method!r}')
        self.method = method
        self.align_corners = bool(align_corners)
        self.antialias = bool(antialias)
        self.anyup: AnyUp | None = None
        if method == 'anyup':
            self.anyup = build_anyup(checkpoint, owner=owner, **anyup_kwargs)
        self.checkpoint = None if checkpoint is None else os.fspath(checkpoint)
        self.frozen = bool(frozen) or self.anyup is None
        if self.anyup is not None:
            self.anyup.set_trainable(not self.frozen)
        self.train(self.training)
        self.register_load_state_dict_pre_hook(_accept_plain_anyup_keys)

    def train(self, mode: bool = True) -> FeatureUpsampler:
        """Sets the mode; a frozen AnyUp stays in eval mode."""
        super().train(mode)
        if self.frozen and self.anyup is not None:
            self.anyup.eval()
        return self

    def forward(
        self,
        image: Tensor | None,
        features: Tensor | Sequence[Tensor],
        output_size: Size | Sequence[Size] | None,
    ) -> Tensor | list[Tensor]:
        """Upsamples one map or several, each to its size.

        Args:
            image: (B, 3, H, W) ImageNet-normalised guidance (AnyUp); may be ``None`` for
                ``'bilinear'``.
            features: One (B, C, h, w) map, or a sequence of maps.
            output_size: One (H', W') (or an int, or ``None`` for the image size) for every
                map, or one size per map, as :class:`AnyUp` takes it.

        Returns:
            The upsampled map, or a list of them in the order of ``features``.
        """
        single = isinstance(features, Tensor)
        maps = [features] if single else list(features)
        if output_size is None and image is None:
            raise ValueError('output_size=None means the image size, but image is None')
        default = None if image is None else tuple(image.shape[-2:])
        sizes = check_output_sizes(output_size, len(maps), default)
        if self.anyup is None:
            out = [self._bilinear(f, s) for f, s in zip(maps, sizes)]
        elif self.frozen and not any(f.requires_grad for f in maps):
            with torch.no_grad():
                out = self._anyup(image, maps, sizes)
        else:
            out = self._anyup(image, maps, sizes)
        return out[0] if single else out

    def _anyup(self, image: Tensor | None, maps: list[Tensor], sizes: list[Size]) -> list[Tensor]:
        if image is None:
            raise ValueError('AnyUp needs the guidance image, got image=None')
        # One call: the image, query and key encoders run once for all maps.
        return self.anyup(image, maps, output_size=sizes)

    def _bilinear(self, features: Tensor, size: Size) -> Tensor:
        if tuple(features.shape[-2:]) == tuple(size):
            return features
        return F.interpolate(
            features,
            size=tuple(size),
            mode='bilinear',
            align_corners=self.align_corners,
            antialias=self.antialias,
        )

    def extra_repr(self) -> str:
        return f'method={self.method!r}, checkpoint={self.checkpoint!r}, frozen={self.frozen}'


def _accept_plain_anyup_keys(
    module: FeatureUpsampler, state_dict: dict, prefix: str, *args: Any
) -> None:
    """Lets a plain AnyUp state dict (``rope.freqs``, ...) load into ``FeatureUpsampler.anyup``.

    Also reads checkpoints of models that held the AnyUp module directly under the name the
    upsampler now has (e.g. an MMSeg neck's ``neck.upsampler.rope.freqs``).
    """
    if module.anyup is None:
        return
    for name in module.anyup.state_dict():
        old, new = prefix + name, prefix + 'anyup.' + name
        if old in state_dict and new not in state_dict:
            state_dict[new] = state_dict.pop(old)
