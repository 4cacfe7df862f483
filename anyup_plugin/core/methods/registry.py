"""The method names configs and the command line use, how each is built, and whose a file is.

Methods are imported when first built, so that importing the package costs nothing for
methods a user does not use. :func:`identify_checkpoint` and :func:`describe_checkpoint` name
the method (or AnyUp) whose weights a loaded file holds, from every registered method's
``checkpoint_keys_hint``: each method's loader says so when it is given another's file.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .base import UpsamplingMethod

__all__ = [
    'ANYUP_CHECKPOINT_KEYS',
    'METHOD_ALIASES',
    'METHOD_CLASSES',
    'CheckpointIdentity',
    'build_method',
    'describe_checkpoint',
    'identify_checkpoint',
    'locate_keys',
    'method_class',
    'register_method',
]

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

#: Keys only an AnyUp checkpoint has (the image encoder's stem and the feature unification's
#: basis, whose shapes :mod:`anyup_plugin.core.hub` reads): AnyUp is no registered method, but
#: its files are the ones most often given to one.
ANYUP_CHECKPOINT_KEYS: tuple[str, ...] = ('image_encoder.0.weight', 'key_features_encoder.0.basis')

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


@dataclass(frozen=True)
class CheckpointIdentity:
    """Whose weights a state dict holds, and where in it.

    Attributes:
        method: The method key (``'jafar'``), or ``'anyup'``.
        class_name: The class that loads them (``'JAFAR'``, ``'AnyUp'``).
        entry: The entry of the state dict that holds them (``'state_dict'``); ``None``: the
            state dict itself.
        prefix: What precedes the method's own key names (``'module.'``); ``''``: nothing.
    """

    method: str
    class_name: str
    entry: str | None = None
    prefix: str = ''


def locate_keys(state: Mapping[str, Any], keys: tuple[str, ...]) -> tuple[str | None, str] | None:
    """Where ``state`` holds all of ``keys``: bare or under one prefix, itself or one entry down.

    Training checkpoints keep the weights in an entry (``'state_dict'``, JAFAR's ``'jafar'``)
    and wrappers put a prefix on every key (``'module.'``, ``'model.'``), hence both.

    Args:
        state: A loaded checkpoint.
        keys: Key names, all of which must be there under the same prefix.

    Returns:
        ``(entry, prefix)``: the entry of ``state`` holding them (``None``: ``state`` itself)
        and their common prefix (``''``: bare); ``None`` if no level holds them all.
    """
    if not keys:
        return None
    levels = [(None, state)]
    levels += [(str(k), v) for k, v in state.items() if isinstance(v, Mapping)]
    first, rest = keys[0], keys[1:]
    for entry, level in levels:
        ordered = [k for k in level if isinstance(k, str)]
        names = set(ordered)
        for name in ordered:
            if name != first and not name.endswith('.' + first):
                continue
            prefix = name[: len(name) - len(first)]
            if all(prefix + k in names for k in rest):
                return entry, prefix
    return None


def identify_checkpoint(state: Mapping[str, Any]) -> CheckpointIdentity | None:
    """Which method's weights ``state`` holds, by the methods' ``checkpoint_keys_hint``.

    Looks for AnyUp's keys (:data:`ANYUP_CHECKPOINT_KEYS`) and every registered method's hint
    (see :func:`locate_keys` for the layouts recognised); the state dict itself is searched
    before its entries.

    Args:
        state: A loaded checkpoint (a state dict, or a training checkpoint holding one).

    Returns:
        The method and where its weights are; ``None`` when no method's keys are all there.
    """
    candidates: list[tuple[str, str, tuple[str, ...]]] = [('anyup', 'AnyUp', ANYUP_CHECKPOINT_KEYS)]
    for key in METHOD_CLASSES:
        try:
            cls = method_class(key)
        except Exception:
            # Naming the file's method is a courtesy of an error message: a method whose module
            # cannot be imported here is skipped rather than raising instead of that error.
            continue
        candidates.append((key, cls.__name__, tuple(cls.checkpoint_keys_hint)))
    found = []
    for key, class_name, hint in candidates:
        where = locate_keys(state, hint)
        if where is not None:
            found.append(CheckpointIdentity(key, class_name, *where))
    # The state dict itself before its entries; among equals, the order above.
    return min(found, key=lambda f: f.entry is not None, default=None)


def describe_checkpoint(state: Mapping[str, Any], expected: str) -> str:
    """What ``state`` holds, for the message of method ``expected`` that cannot load it.

    Args:
        state: A loaded checkpoint.
        expected: The key of the method that was given it (``'naf'``).

    Returns:
        A clause such as ``"this holds a JAFAR checkpoint (method 'jafar')"``, ``"this holds
        NAF weights under the prefix 'model.' (strip 'model.' from every key)"``, or, for
        unknown keys, ``'this holds 2 key(s) (a.weight, a.bias), not those of any known
        method'``.
    """
    identity = identify_checkpoint(state)
    if identity is None:
        shown = ', '.join(str(k) for k in list(state)[:5]) + (', ...' if len(state) > 5 else '')
        entries = [k for k, v in state.items() if isinstance(v, Mapping)]
        if entries:
            return (
                f'this holds {len(state)} key(s) ({shown}): a training checkpoint '
                f"({{{entries[0]!r}: ...}}) without any known method's weights"
            )
        return f'this holds {len(state)} key(s) ({shown}), not those of any known method'
    if identity.method == 'anyup':
        return 'this holds an AnyUp checkpoint (load it with AnyUp.from_pretrained)'
    if identity.method != expected:
        return f"this holds a {identity.class_name} checkpoint (method '{identity.method}')"
    entry, prefix = identity.entry, identity.prefix
    if entry is None and not prefix:
        # All the hinted keys are there: it is the values the caller could not read.
        return (
            f"this has {identity.class_name}'s key names, but not tensors of the shapes "
            f'{identity.class_name} reads from them'
        )
    where = [f'inside {{{entry!r}: ...}}'] if entry is not None else []
    where += [f'under the prefix {prefix!r}'] if prefix else []
    if entry is not None:
        fix = f'save its {entry!r} entry' + (
            f' with {prefix!r} stripped from every key' if prefix else ' alone'
        )
    else:
        fix = f'strip {prefix!r} from every key'
    return f'this holds {identity.class_name} weights {" and ".join(where)} ({fix})'
