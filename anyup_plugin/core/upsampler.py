"""One upsampling policy for every framework adapter: any method, frozen or trained.

The MMSegmentation necks, the Detectron2 backbone wrapper and any user script wrap
:class:`FeatureUpsampler` in a few lines instead of re-implementing how a method is built
(checkpoint, published name or random initialisation), how it is frozen (eval mode kept,
no autograd graph when nothing needs gradients), which keyword arguments it takes, the
bilinear baseline, and the output size of a stride (:func:`stride_output_size`).

The methods are AnyUp, bilinear interpolation and every method of
:mod:`anyup_plugin.core.methods` (including those added with
:func:`~anyup_plugin.core.methods.register_method`).
"""

from __future__ import annotations

import inspect
import logging
import math
import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .anyup import PUBLISHED_CHECKPOINTS, AnyUp
from .checks import check_output_sizes
from .methods.base import UpsamplingMethod
from .methods.registry import METHOD_ALIASES, METHOD_CLASSES, build_method, method_class

__all__ = [
    'UPSAMPLER_METHODS',
    'FeatureUpsampler',
    'build_anyup',
    'method_arguments',
    'method_checkpoint',
    'method_key',
    'stride_output_size',
]

logger = logging.getLogger(__name__)

#: The methods shipped with the package: AnyUp, its bilinear baseline and the registry's
#: (:data:`~anyup_plugin.core.methods.METHOD_CLASSES`). Methods registered later with
#: :func:`~anyup_plugin.core.methods.register_method` are accepted as well.
UPSAMPLER_METHODS: tuple[str, ...] = ('anyup', 'bilinear', *METHOD_CLASSES)

# The keyword arguments of the bilinear baseline (``F.interpolate``'s).
_BILINEAR_ARGUMENTS = ('align_corners', 'antialias')

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


def method_key(method: str) -> str:
    """The key of method ``method``: lower case, aliases resolved (``'JBU'`` -> ``'featup'``).

    Raises:
        ValueError: ``method`` is not a known method; the message lists the known ones.
    """
    name = str(method).lower()
    key = METHOD_ALIASES.get(name, name)
    if key not in ('anyup', 'bilinear'):
        method_class(key)  # raises ValueError listing the known methods
    return key


def method_arguments(method: str) -> tuple[str, ...] | None:
    """The keyword arguments method ``method`` takes beside ``checkpoint`` and ``frozen``.

    Read from the method's own constructor signature (AnyUp's, or the registered class's);
    the bilinear baseline takes ``align_corners`` and ``antialias``.

    Args:
        method: A method name or alias (see :data:`UPSAMPLER_METHODS`).

    Returns:
        The argument names, or ``None`` when the constructor takes any keyword (``**kwargs``).

    Raises:
        ValueError: ``method`` is not a known method; the message lists the known ones.
    """
    key = method_key(method)
    if key == 'bilinear':
        return _BILINEAR_ARGUMENTS
    cls = AnyUp if key == 'anyup' else method_class(key)
    if cls.__init__ is nn.Module.__init__:
        # No constructor of its own: nn.Module's (*args, **kwargs) takes no argument.
        return ()
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return tuple(
        p.name
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    )


def method_checkpoint(
    method: str, checkpoint: str | os.PathLike | None, owner: str = 'FeatureUpsampler'
) -> str | os.PathLike | None:
    """The checkpoint method ``method`` loads when a config gives it ``checkpoint``.

    Configs written for AnyUp name its published weights (``'anyup_paper'``); switching the
    method from the command line leaves that name behind. Another method ignores it (logged),
    as the bilinear baseline ignores any checkpoint; every other value is the method's own.

    Args:
        method: A method name or alias.
        checkpoint: The configured checkpoint; ``None`` or ``''`` for none.
        owner: Named in the log message.

    Returns:
        ``checkpoint``, or ``None`` when the method loads nothing.
    """
    key = method_key(method)
    if checkpoint is None or checkpoint == '':
        return None
    if key == 'bilinear':
        return None
    if key != 'anyup' and str(checkpoint) in PUBLISHED_CHECKPOINTS:
        logger.warning(
            '%s: checkpoint %r holds AnyUp weights; method %r ignores it. Set the checkpoint '
            "to the method's own weights file (e.g. model.neck.checkpoint=/path/weights.pth).",
            owner,
            str(checkpoint),
            key,
        )
        return None
    return checkpoint


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


def _build_other(
    key: str, checkpoint: str | os.PathLike | None, owner: str, kwargs: dict[str, Any]
) -> UpsamplingMethod:
    """Builds a registered method, logging where its weights come from."""
    module = build_method(key, checkpoint, **kwargs)
    if checkpoint is not None:
        logger.info('%s: loaded %s weights from %s', owner, key, os.fspath(checkpoint))
    elif any(True for _ in module.parameters()):
        logger.warning(
            '%s: no checkpoint given, %s keeps its random initialisation. Give its published '
            'weights file as the checkpoint.',
            owner,
            key,
        )
    return module


class FeatureUpsampler(nn.Module):
    """Upsamples feature maps to given sizes with any upsampling method.

    ``method`` is AnyUp, ``'bilinear'`` or any method of :mod:`anyup_plugin.core.methods`.
    A frozen method trains no parameter, stays in eval mode whatever ``train()`` is called
    with, and records no autograd graph unless a feature map needs gradients (a backbone
    being fine-tuned). An unfrozen method trains with the rest of the model (AnyUp's
    never-used parameters stay frozen, see :meth:`AnyUp.set_trainable`). Before each call,
    a registered method checks the features against what its weights were trained for
    (:meth:`~anyup_plugin.core.methods.UpsamplingMethod.check_features`).

    AnyUp upsamples all maps of a call at once (its image encoders run once); the other
    methods run once per map (one that makes a size of its own, FeatUp's JBU, is resized
    bilinearly to the size asked for). AnyUp lives in the submodule ``anyup`` (the key prefix of
    existing checkpoints), the other methods in ``method_module``; a plain state dict of the
    method (without the prefix) loads too.

    Args:
        method: A method name or alias (:data:`UPSAMPLER_METHODS`, or one registered with
            :func:`~anyup_plugin.core.methods.register_method`).
        checkpoint: The method's weights: for AnyUp a local file or published name (see
            :func:`build_anyup`); for another method its published checkpoint file (see
            :func:`method_checkpoint`: AnyUp's published names are ignored by the others);
            ``None`` keeps a random initialisation. Ignored by ``'bilinear'``.
        frozen: Keep the method frozen (the probes' protocol); ``False`` trains it.
        owner: Named in log messages.
        **method_kwargs: The method's own constructor arguments (AnyUp's ``window_ratio``,
            ``attention_kernel``, ...; bilinear's ``align_corners`` and ``antialias``); see
            :func:`method_arguments`.

    Raises:
        ValueError: An unknown method (the message lists the known ones).
        TypeError: A keyword argument the method does not take (the message lists those it
            takes).

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
        *,
        owner: str = 'FeatureUpsampler',
        **method_kwargs: Any,
    ) -> None:
        super().__init__()
        key = method_key(method)
        accepted = method_arguments(key)
        if accepted is not None:
            unknown = sorted(set(method_kwargs) - set(accepted))
            if unknown:
                raise TypeError(
                    f'{owner}: method {key!r} does not take {", ".join(unknown)}; it takes '
                    f'{", ".join(accepted) or "no keyword arguments"}'
                )
        self.method = key
        checkpoint = method_checkpoint(key, checkpoint, owner)
        self.checkpoint = None if checkpoint is None else os.fspath(checkpoint)
        self.align_corners = bool(method_kwargs.get('align_corners', False))
        self.antialias = bool(method_kwargs.get('antialias', False))
        self.anyup: AnyUp | None = None
        self.method_module: UpsamplingMethod | None = None
        if key == 'anyup':
            self.anyup = build_anyup(checkpoint, owner=owner, **method_kwargs)
        elif key != 'bilinear':
            self.method_module = _build_other(key, checkpoint, owner, method_kwargs)
        module = self._module()
        has_parameters = module is not None and any(True for _ in module.parameters())
        self.frozen = bool(frozen) or not has_parameters
        if self.anyup is not None:
            self.anyup.set_trainable(not self.frozen)
        elif self.method_module is not None and self.frozen:
            self.method_module.requires_grad_(False)
        self.train(self.training)
        self.register_load_state_dict_pre_hook(_accept_plain_method_keys)

    @property
    def uses_image(self) -> bool:
        """Whether the method needs the guidance image (``image`` may be ``None`` otherwise)."""
        if self.anyup is not None:
            return True
        return self.method_module is not None and type(self.method_module).uses_image

    def _module(self) -> nn.Module | None:
        """The module that upsamples (``None`` for the bilinear baseline)."""
        return self.anyup if self.anyup is not None else self.method_module

    def train(self, mode: bool = True) -> FeatureUpsampler:
        """Sets the mode; a frozen method stays in eval mode."""
        super().train(mode)
        module = self._module()
        if self.frozen and module is not None:
            module.eval()
        return self

    def forward(
        self,
        image: Tensor | None,
        features: Tensor | Sequence[Tensor],
        output_size: Size | Sequence[Size] | None,
    ) -> Tensor | list[Tensor]:
        """Upsamples one map or several, each to its size.

        Args:
            image: (B, 3, H, W) ImageNet-normalised guidance; may be ``None`` for methods
                that do not use it (:attr:`uses_image` false, e.g. ``'bilinear'``).
            features: One (B, C, h, w) map, or a sequence of maps.
            output_size: One (H', W') (or an int, or ``None`` for the image size) for every
                map, or one size per map, as :class:`AnyUp` takes it.

        Returns:
            The upsampled map, or a list of them in the order of ``features``.

        Raises:
            ValueError: ``image`` is ``None`` for a method that uses it, or sizes that do not
                fit the maps.
            WrongFeaturesError: Features the method's weights were not trained for.
        """
        single = isinstance(features, Tensor)
        maps = [features] if single else list(features)
        if output_size is None and image is None:
            raise ValueError('output_size=None means the image size, but image is None')
        if image is None and self.uses_image:
            raise ValueError(f'{self.method} needs the guidance image, got image=None')
        default = None if image is None else tuple(image.shape[-2:])
        sizes = check_output_sizes(output_size, len(maps), default)
        if self.method_module is not None:
            for feature_map in maps:
                self.method_module.check_features(image, feature_map)
        if self._module() is None:
            out = [self._bilinear(f, s) for f, s in zip(maps, sizes)]
        elif self.frozen and not any(f.requires_grad for f in maps):
            with torch.no_grad():
                out = self._upsample(image, maps, sizes)
        else:
            out = self._upsample(image, maps, sizes)
        return out[0] if single else out

    def _upsample(
        self, image: Tensor | None, maps: list[Tensor], sizes: list[Size]
    ) -> list[Tensor]:
        if self.anyup is not None:
            # One call: the image, query and key encoders run once for all maps.
            return self.anyup(image, maps, output_size=sizes)
        return [self._run_method(image, f, tuple(s)) for f, s in zip(maps, sizes)]

    def _run_method(self, image: Tensor | None, features: Tensor, size: Size) -> Tensor:
        """One map through the registered method, at ``size``.

        A method that makes one size of its own (``output_size_for`` not ``None``; FeatUp's
        JBU: 16 times the map) runs at that size and its result is resized bilinearly to
        ``size``, as FeatUp's own code does.
        """
        own_size = self.method_module.output_size_for(tuple(features.shape[-2:]))
        if own_size is None:
            return self.method_module(image, features, size)
        produced = tuple(int(s) for s in own_size)
        out = self.method_module(image, features, produced)
        if produced == tuple(size):
            return out
        return F.interpolate(out, size=size, mode='bilinear', align_corners=False)

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


def _accept_plain_method_keys(
    module: FeatureUpsampler, state_dict: dict, prefix: str, *args: Any
) -> None:
    """Lets a plain state dict of the method (``rope.freqs``, ...) load into its submodule.

    Also reads checkpoints of models that held the AnyUp module directly under the name the
    upsampler now has (e.g. an MMSeg neck's ``neck.upsampler.rope.freqs``).
    """
    if module.anyup is not None:
        name, inner = 'anyup', module.anyup
    elif module.method_module is not None:
        name, inner = 'method_module', module.method_module
    else:
        return
    for key in inner.state_dict():
        old, new = prefix + key, f'{prefix}{name}.{key}'
        if old in state_dict and new not in state_dict:
            state_dict[new] = state_dict.pop(old)
