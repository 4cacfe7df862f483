"""Old class names kept working for a while: a subclass under the old name that warns."""

from __future__ import annotations

import warnings
from typing import Any, TypeVar

__all__ = ['deprecated_alias']

T = TypeVar('T', bound=type)


def deprecated_alias(cls: T, old_name: str) -> T:
    """A subclass of ``cls`` called ``old_name`` that warns once each time it is constructed.

    For names that users write in configs (``dict(type='OldName')``) or import: registering
    the alias under the old name keeps those configs building the same module, while the
    warning says what to write instead.

    Args:
        cls: The class under its new name.
        old_name: The name it had before.

    Returns:
        The alias: constructing it warns with a ``DeprecationWarning`` naming both classes,
        then constructs ``cls`` with the same arguments.
    """
    message = (
        f'{old_name} was renamed {cls.__name__}; the old name is deprecated and will be '
        f'removed: write {cls.__name__} (same arguments)'
    )

    def warn_then_init(self: Any, *args: Any, **kwargs: Any) -> None:
        # stacklevel 2: the line that constructed the alias (a user's script or a registry).
        warnings.warn(message, DeprecationWarning, stacklevel=2)
        cls.__init__(self, *args, **kwargs)

    namespace = {
        '__init__': warn_then_init,
        '__doc__': f'Deprecated name of :class:`{cls.__module__}.{cls.__name__}`. {message}.',
        '__module__': cls.__module__,
        '__qualname__': old_name,
    }
    return type(old_name, (cls,), namespace)
