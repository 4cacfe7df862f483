"""A Detectron2 backbone that owns any backbone and upsamples its features (AnyUp or any method)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
from detectron2.config import CfgNode
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from torch import Tensor

from anyup_plugin.core import ATTENTION_KERNELS, FeatureUpsampler, stride_output_size
from anyup_plugin.core.input_norm import ToImageNetNorm
from anyup_plugin.core.upsampler import method_key

from .config import keyword_pairs

__all__ = ['AnyUpBackbone', 'build_anyup_backbone', 'build_input_norm', 'output_name']

logger = logging.getLogger(__name__)

_INPUT_FORMATS = ('RGB', 'BGR')


def output_name(feature: str, stride: int) -> str:
    """Name of ``feature`` upsampled to ``stride``: ``'<feature>_s<stride>'``."""
    return f'{feature}_s{stride}'


def build_input_norm(cfg: CfgNode) -> ToImageNetNorm:
    """Maps the network input (``MODEL.PIXEL_MEAN``/``STD`` in ``INPUT.FORMAT``) to ImageNet RGB.

    Raises:
        ValueError: ``INPUT.FORMAT`` is not ``'RGB'`` or ``'BGR'``.
    """
    if cfg.INPUT.FORMAT not in _INPUT_FORMATS:
        raise ValueError(
            f'INPUT.FORMAT must be one of {_INPUT_FORMATS} (AnyUp and the timm encoders take '
            f'colour images), got {cfg.INPUT.FORMAT!r}'
        )
    return ToImageNetNorm(cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD, channel_order=cfg.INPUT.FORMAT)


class AnyUpBackbone(Backbone):
    """Owns a bottom-up backbone and upsamples chosen outputs to chosen strides, image-guided.

    Built around another backbone as Detectron2's ``FPN`` is: it receives the normalised
    network input, runs the bottom-up backbone on it, and upsamples every feature in
    ``in_features`` to every stride in ``strides`` with one :class:`FeatureUpsampler` call
    (AnyUp guided by the same input image, bilinear, or any method of
    :mod:`anyup_plugin.core.methods`, guided when it uses the image), so AnyUp's image
    encoders run once.
    A frozen bottom-up backbone (``freeze_bottom_up``) gets no gradients and stays in eval
    mode; the upsampler's own freezing is :class:`FeatureUpsampler`'s.

    The input is padded (by the meta-architecture, see :attr:`size_divisibility`) to a
    multiple of the bottom-up backbone's divisibility and of the coarsest output stride, so
    every output covers exactly ``H / s x W / s`` cells and heads that upsample by their
    stride (``SemSegFPNHead``) land on the label size.

    Args:
        bottom_up: Any Detectron2 backbone.
        upsampler: The upsampling policy (any method, frozen or trained).
        input_norm: Maps the network input to the ImageNet-normalised RGB guidance.
        in_features: Bottom-up outputs to upsample.
        strides: Output strides (powers of two, each at most every feature's stride).
        freeze_bottom_up: Freeze the bottom-up backbone.

    Shapes:
        Input: (B, 3, H, W) images normalised as ``input_norm`` expects.
        Output: ``{'<f>_s<s>': (B, C_f, ceil(H / s), ceil(W / s))}`` for each feature ``f`` of
        ``in_features`` and stride ``s`` of ``strides``, in that order.
    """

    def __init__(
        self,
        bottom_up: Backbone,
        upsampler: FeatureUpsampler,
        input_norm: ToImageNetNorm,
        in_features: Sequence[str],
        strides: Sequence[int],
        freeze_bottom_up: bool = True,
    ) -> None:
        super().__init__()
        self.bottom_up = bottom_up
        self.upsampler = upsampler
        self.input_norm = input_norm
        _check_features_and_strides(bottom_up.output_shape(), list(in_features), list(strides))
        self.in_features = list(in_features)
        self.strides = list(strides)
        self.freeze_bottom_up = bool(freeze_bottom_up)
        if self.freeze_bottom_up:
            for param in self.bottom_up.parameters():
                param.requires_grad_(False)
        shapes = bottom_up.output_shape()
        self._pairs = [(f, s) for f in self.in_features for s in self.strides]
        self._out_features = [output_name(f, s) for f, s in self._pairs]
        self._out_feature_channels = {output_name(f, s): shapes[f].channels for f, s in self._pairs}
        self._out_feature_strides = {output_name(f, s): s for f, s in self._pairs}
        constraints = dict(bottom_up.padding_constraints)
        base = constraints.get('size_divisibility', bottom_up.size_divisibility) or 1
        divisibility = math.lcm(int(base), max(self.strides))
        self._size_divisibility = 0 if divisibility == 1 else divisibility
        if constraints:
            constraints['size_divisibility'] = self._size_divisibility
        self._padding_constraints = constraints
        self.train(self.training)

    def train(self, mode: bool = True) -> AnyUpBackbone:
        """Sets the mode; a frozen bottom-up backbone (and a frozen method) stay in eval mode."""
        super().train(mode)
        if self.freeze_bottom_up:
            self.bottom_up.eval()
        return self

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """(B, 3, H, W) normalised images -> ``{'<f>_s<s>': (B, C_f, H / s, W / s)}``."""
        if self.freeze_bottom_up:
            with torch.no_grad():
                features = self.bottom_up(x)
        else:
            features = self.bottom_up(x)
        guidance = self.input_norm(x) if self.upsampler.uses_image else None
        maps = [features[f] for f, _ in self._pairs]
        sizes = [stride_output_size(x.shape[-2:], s) for _, s in self._pairs]
        upsampled = self.upsampler(guidance, maps, sizes)
        return dict(zip(self._out_features, upsampled))

    @property
    def size_divisibility(self) -> int:
        """The bottom-up backbone's divisibility and the coarsest output stride, combined."""
        return self._size_divisibility

    @property
    def padding_constraints(self) -> dict[str, int]:
        """The bottom-up backbone's constraints with :attr:`size_divisibility`."""
        return dict(self._padding_constraints)


def _check_features_and_strides(
    shapes: dict[str, ShapeSpec], in_features: list[str], strides: list[int]
) -> None:
    """Raises ``ValueError`` naming the config key for unknown features or bad strides."""
    if not in_features:
        raise ValueError(
            'MODEL.ANYUP.IN_FEATURES must name at least one of the bottom-up outputs '
            f'{list(shapes)}'
        )
    unknown = [f for f in in_features if f not in shapes]
    if unknown:
        raise ValueError(
            f'MODEL.ANYUP.IN_FEATURES {unknown} are not outputs of the bottom-up backbone '
            f'(MODEL.ANYUP.BOTTOM_UP); allowed: {list(shapes)}'
        )
    if not strides:
        raise ValueError('MODEL.ANYUP.STRIDES must hold at least one power of two, e.g. [1]')
    finest = min((int(shapes[f].stride) for f in in_features if shapes[f].stride), default=None)
    allowed = [2**k for k in range(int(math.log2(finest)) + 1)] if finest else None
    for stride in strides:
        if (
            not isinstance(stride, int)
            or isinstance(stride, bool)
            or stride < 1
            or (stride & (stride - 1))
        ):
            raise ValueError(
                f'MODEL.ANYUP.STRIDES must hold powers of two (1, 2, 4, ...), got {stride!r}'
                + (f'; allowed here: {allowed}' if allowed else '')
            )
        if finest is not None and stride > finest:
            raise ValueError(
                f'MODEL.ANYUP.STRIDES: {stride} is coarser than the stride {finest} of '
                f'MODEL.ANYUP.IN_FEATURES {in_features} (upsampling only); allowed: {allowed}'
            )


def _bottom_up_names() -> list[str]:
    return sorted(name for name, _ in BACKBONE_REGISTRY if name != 'build_anyup_backbone')


@BACKBONE_REGISTRY.register()
def build_anyup_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> AnyUpBackbone:
    """Builds :class:`AnyUpBackbone` around ``MODEL.ANYUP.BOTTOM_UP`` from ``MODEL.ANYUP.*``.

    Args:
        cfg: Config with :func:`add_anyup_config`'s keys.
        input_shape: Input channels (must be 3).

    Returns:
        The backbone.

    Raises:
        ValueError: A 1- or 4-channel input, an unknown ``MODEL.ANYUP.BOTTOM_UP``,
            ``UPSAMPLER``, ``ATTENTION_KERNEL`` or ``INPUT.FORMAT``, ``METHOD_KWARGS`` that are
            not [key, value] pairs, a feature the bottom-up backbone does not produce, or a
            stride that is not a power of two (each message names the key and the allowed
            values).
        TypeError: A ``METHOD_KWARGS`` key the method does not take (the message lists those
            it takes).
    """
    if input_shape.channels not in (None, 3):
        raise ValueError(
            f'The upsampler needs 3-channel images (MODEL.PIXEL_MEAN with 3 values), got '
            f'{input_shape.channels} channels'
        )
    anyup_cfg = cfg.MODEL.ANYUP
    input_norm = build_input_norm(cfg)
    name = anyup_cfg.BOTTOM_UP
    if name == 'build_anyup_backbone' or name not in BACKBONE_REGISTRY:
        raise ValueError(
            f'MODEL.ANYUP.BOTTOM_UP {name!r} is not a registered bottom-up backbone; allowed: '
            f'{_bottom_up_names()}'
        )
    try:
        method = method_key(anyup_cfg.UPSAMPLER)
    except ValueError as exc:
        raise ValueError(f'MODEL.ANYUP.UPSAMPLER: {exc}') from exc
    kernel = str(anyup_cfg.ATTENTION_KERNEL)
    if kernel not in ATTENTION_KERNELS:
        raise ValueError(
            f'MODEL.ANYUP.ATTENTION_KERNEL must be one of {ATTENTION_KERNELS}, '
            f'got {anyup_cfg.ATTENTION_KERNEL!r}'
        )
    method_kwargs = keyword_pairs(
        anyup_cfg.METHOD_KWARGS, 'MODEL.ANYUP.METHOD_KWARGS', '[["window_ratio", 0.2]]'
    )
    if method == 'anyup':
        # Keys of their own for AnyUp (the probe configs pin WINDOW_RATIO); the other methods
        # ignore them, so that switching UPSAMPLER on the command line needs nothing else.
        method_kwargs = {'attention_kernel': kernel, **method_kwargs}
        if anyup_cfg.WINDOW_RATIO is not None:
            method_kwargs = {'window_ratio': anyup_cfg.WINDOW_RATIO, **method_kwargs}
    bottom_up = BACKBONE_REGISTRY.get(name)(cfg, input_shape)
    _check_features_and_strides(
        bottom_up.output_shape(), list(anyup_cfg.IN_FEATURES), list(anyup_cfg.STRIDES)
    )
    try:
        upsampler = FeatureUpsampler(
            method,
            checkpoint=anyup_cfg.CHECKPOINT or None,
            frozen=anyup_cfg.FROZEN,
            owner='build_anyup_backbone',
            **method_kwargs,
        )
    except TypeError as exc:
        raise TypeError(f'MODEL.ANYUP.METHOD_KWARGS: {exc}') from exc
    except FileNotFoundError as exc:
        allowed = (
            "a local .pth file, 'anyup_paper' or 'anyup_multi_backbone'"
            if method == 'anyup'
            else f'a local weights file of {method}'
        )
        raise FileNotFoundError(
            f'MODEL.ANYUP.CHECKPOINT {anyup_cfg.CHECKPOINT!r}: {exc} (allowed: {allowed}, '
            "or '' for random weights)"
        ) from exc
    logger.info(
        'Upsampling backbone: %s around %s, %s upsampled to strides %s',
        method,
        name,
        list(anyup_cfg.IN_FEATURES),
        list(anyup_cfg.STRIDES),
    )
    return AnyUpBackbone(
        bottom_up,
        upsampler,
        input_norm,
        anyup_cfg.IN_FEATURES,
        anyup_cfg.STRIDES,
        freeze_bottom_up=anyup_cfg.FREEZE_BOTTOM_UP,
    )
