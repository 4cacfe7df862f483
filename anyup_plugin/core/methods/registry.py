"""The method names configs and the command line use, and how each is built.

Methods are imported when first built, so that importing the package costs nothing for
methods a user does not use.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from .base import UpsamplingMethod

__all__ = ['METHOD_ALIASES', 'METHOD_CLASSES', 'build_method', 'method_class', 'register_method']

#: Method key -> the class, or ``'module:Class'`` (a module of this package, or a dotted
#: absolute module path for methods defined elsewhere; see :func:`register_method`).
#: ``'anyup'`` and ``'bilinear'`` are :class:`~anyup_plugin.core.upsampler.FeatureUpsampler`'s own.
METHOD_CLASSES: dict[str, str | type[UpsamplingMethod]] = {
    'bicubic': 'classical:BicubicUpsampler',
    'guided_filter': 'classical:GuidedFilterUpsampler',
    'joint_bilateral': 'classical:JointBilateralUpsampler',
    'featup': 'featup:FeatUpJBU',
    'jafar': 'jafar:JAFAR',
    'loftup': 'loftup:LoftUp',
    'naf': 'naf:NAF',
}

#: Other spellings: the AnyUp paper's tables call FeatUp's learned stack "FeatUp (JBU)".
METHOD_ALIASES: dict[str, str] = {'jbu': 'featup', 'featup_jbu': 'featup'}


def method_class(name: str) -> type[UpsamplingMethod]:
    """The class of method ``name``.

    Raises:
        ValueError: ``name`` is not a known method; the message lists the known ones.
    """
    key = METHOD_ALIASES.get(str(name).lower(), str(name).lower())
    if key not in METHOD_CLASSES:
        known = ', '.join(sorted(['anyup', 'bilinear', *METHOD_CLASSES]))
        raise ValueError(f'unknown upsampling method {name!r}; known methods: {known}')
    entry = METHOD_CLASSES[key]
    if isinstance(entry, type):
        return entry
    module_name, class_name = entry.split(':')
    if '.' not in module_name:
        module_name = f'{__package__}.{module_name}'
    return getattr(importlib.import_module(module_name), class_name)


def register_method(name: str, cls: str | type[UpsamplingMethod]) -> None:
    """Makes ``name`` build ``cls`` (a class, or ``'package.module:Class'`` imported lazily).

    Raises:
        ValueError: ``name`` is taken (by AnyUp, bilinear, a method or an alias).
    """
    key = str(name).lower()
    if key in ('anyup', 'bilinear') or key in METHOD_CLASSES or key in METHOD_ALIASES:
        raise ValueError(f'upsampling method {name!r} is already registered')
    METHOD_CLASSES[key] = cls


def build_method(
    name: str, checkpoint: str | os.PathLike | None = None, **kwargs: Any
) -> UpsamplingMethod:
    """Builds method ``name``: from a local checkpoint file, else randomly initialised.

    Args:
        name: A key of :data:`METHOD_CLASSES`.
        checkpoint: The published checkpoint file (methods with weights); ``None`` keeps a
            random initialisation (methods without weights ignore nothing: they refuse one).
        **kwargs: Constructor arguments of the method.

    Returns:
        The method module.
    """
    cls = method_class(name)
    if checkpoint is None or checkpoint == '':
        return cls(**kwargs)
    return cls.from_checkpoint(checkpoint, **kwargs)
