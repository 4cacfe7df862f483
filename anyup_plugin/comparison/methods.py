"""The upsampling methods a comparison runs: names checked against the registry, weights, necks."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from anyup_plugin.core.methods.registry import METHOD_ALIASES, METHOD_CLASSES, method_class

__all__ = [
    'METHODS_WITH_WEIGHTS',
    'PER_BACKBONE_METHODS',
    'MissingWeightsError',
    'canonical_method',
    'check_weights',
    'neck_for_method',
    'parse_checkpoints',
]

#: Methods whose weights belong to one backbone (channels and patch size); they take
#: ``feature_channels``/``patch_size`` keyword arguments.
PER_BACKBONE_METHODS: tuple[str, ...] = ('featup', 'jafar', 'loftup')

#: Where the published weights of each learned method are (DINOv2 ViT-S/14 ones where the
#: weights are per backbone). AnyUp's configs name ``'anyup_paper'`` already.
METHODS_WITH_WEIGHTS: dict[str, str] = {
    'anyup': "the configs' 'anyup_paper' (downloaded into torch's hub cache when online), or a "
    'local file',
    'featup': 'https://marhamilresearch4.blob.core.windows.net/feature-upsampling-public/'
    'pretrained/dinov2_jbu_stack_cocostuff.ckpt (FeatUp README, DINOv2 JBU stack)',
    'jafar': 'https://github.com/PaulCouairon/JAFAR/releases/download/Weights/'
    'vit_small_patch14_dinov2.lvd142m.pth (JAFAR README, ViT-S-14-DINOv2)',
    'loftup': 'https://huggingface.co/haiwen/loftup-dinov2s (LoftUp README, DINOv2 S/14)',
    'naf': 'https://github.com/valeoai/NAF/releases/download/model/naf_release.pth '
    '(NAF hubconf.py)',
}


class MissingWeightsError(ValueError):
    """A learned method was asked for, outside ``--demo``, without its weights."""


def canonical_method(name: str) -> str:
    """The registry key of method ``name`` (aliases resolved: ``'jbu'`` -> ``'featup'``).

    Raises:
        ValueError: Not a registered method; the message lists the known ones.
    """
    key = str(name).strip().lower()
    if key in ('anyup', 'bilinear'):
        return key
    key = METHOD_ALIASES.get(key, key)
    if key not in METHOD_CLASSES:
        method_class(key)  # raises the registry's error, which lists every known method
    return key


def parse_checkpoints(items: list[str] | None) -> dict[str, str]:
    """``['jafar=path', ...]`` (the ``--checkpoint`` options) -> ``{'jafar': 'path'}``.

    Raises:
        ValueError: An item without ``=``, an unknown method, or a method named twice.
    """
    parsed: dict[str, str] = {}
    for item in items or []:
        name, sep, path = item.partition('=')
        if not sep or not name.strip() or not path.strip():
            raise ValueError(f'--checkpoint takes METHOD=PATH, got {item!r}')
        key = canonical_method(name)
        if key in parsed:
            raise ValueError(f'--checkpoint names {key!r} twice')
        parsed[key] = path.strip()
    return parsed


def check_weights(method: str, checkpoint: str | None, demo: bool) -> None:
    """Refuses a learned method without weights outside ``demo``.

    AnyUp without ``checkpoint`` keeps its config's published weights, and methods without
    weights (bilinear, bicubic, the filters) need none.

    Raises:
        MissingWeightsError: Naming where the weights are and the option that passes them.
    """
    if demo or checkpoint or method == 'anyup' or method not in METHODS_WITH_WEIGHTS:
        return
    kind = (
        'its weights belong to one backbone (DINOv2 ViT-S/14 for these configs)'
        if method in PER_BACKBONE_METHODS
        else 'random weights would say nothing about it'
    )
    raise MissingWeightsError(
        f'{method} needs its published weights ({kind}): download '
        f'{METHODS_WITH_WEIGHTS[method]} and pass --checkpoint {method}=PATH '
        '(or run with --demo: generated data and random weights, the pipeline only)'
    )


def neck_for_method(
    neck: Mapping[str, Any],
    method: str,
    checkpoint: str | None = None,
    random_weights: bool = False,
    method_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The config's neck (an ``AnyUpNeck`` dict) changed to upsample with ``method``.

    ``'anyup'`` keeps the neck (with ``checkpoint``, or no weights when ``random_weights``);
    ``'bilinear'`` is the configs' ``BilinearNeck`` twin with the same levels and strides;
    every other method sets ``method=`` on the neck (the generalised neck's contract), with
    ``checkpoint`` and ``method_kwargs`` (e.g. ``feature_channels``, ``patch_size``).

    Args:
        neck: The config's ``model.neck``.
        method: A key from :func:`canonical_method`.
        checkpoint: The method's weights (``None``: the config's, or none).
        random_weights: Leave the weights random (``--demo``).
        method_kwargs: Further keyword arguments of the method.

    Returns:
        A new neck config dict.
    """
    base = copy.deepcopy(dict(neck))
    if method == 'bilinear':
        keep = ('in_index', 'output_stride', 'upsample_in_training', 'input_mean', 'input_std')
        return {'type': 'BilinearNeck', **{k: base[k] for k in keep if k in base}}
    if method != 'anyup':
        base.pop('window_ratio', None)  # AnyUp's own argument
        base['method'] = method
        base.update(method_kwargs or {})
    if random_weights:
        base['checkpoint'] = None
    elif checkpoint:
        base['checkpoint'] = checkpoint
    elif method != 'anyup':
        base['checkpoint'] = None
    return base
