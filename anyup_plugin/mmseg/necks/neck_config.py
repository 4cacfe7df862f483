"""The error for config keys a neck does not take, usually left over from a base config's neck.

MMEngine merges a child config's ``neck=dict(type='AnyUpNeck', ...)`` into the base config's
neck dict instead of replacing it, so a model-zoo config that already has a neck (an FPN, a
``MultiLevelNeck``) hands that neck's keys (``in_channels``, ``out_channels``, ``num_outs``,
``scales``, ...) to the image-guided neck. A plain ``TypeError`` about an unexpected keyword
would not say why they are there; this one does, and what to write instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ['check_neck_keys']


def check_neck_keys(
    owner: str,
    given: Mapping[str, Any],
    accepted: Iterable[str] | None,
    *,
    neck_keys: Iterable[str] = (),
    method: str | None = None,
) -> None:
    """Raises if ``given`` holds keys outside ``accepted``, explaining merged base necks.

    Args:
        owner: The neck's class name, e.g. ``'AnyUpNeck'``.
        given: The keyword arguments the neck could not place itself.
        accepted: The names those arguments may have (e.g. the method's constructor
            arguments); ``None``: any name (a method that takes ``**kwargs``).
        neck_keys: The neck's own keys, named in the error.
        method: The method whose arguments ``accepted`` are, named in the error.

    Raises:
        TypeError: Naming the unknown keys, the keys the neck and its method take, and both
            ways to write the config.
    """
    if accepted is None:
        return
    accepted = tuple(accepted)
    unknown = sorted(set(given) - set(accepted))
    if not unknown:
        return
    takes = []
    if neck_keys:
        takes.append(f'its own keys ({", ".join(neck_keys)})')
    if method is not None:
        takes.append(f"method {method!r}'s arguments ({', '.join(accepted) or 'none'})")
    takes_text = f' It takes {" and ".join(takes)}.' if takes else ''
    raise TypeError(
        f'{owner} got config key(s) it does not take: {", ".join(unknown)}.{takes_text} Keys '
        'like these come from the neck the base config already has: MMEngine merges neck=dict('
        f"type='{owner}', ...) into the base config's neck dict instead of replacing it. To "
        f"replace that neck, write neck=dict(_delete_=True, type='{owner}', ...). To keep it "
        f"and run {owner} before it, write a list: neck=[dict(type='{owner}', ...), "
        "{{_base_.model.neck}}] (or that neck's dict written out), with "
        "model type='AnyUpEncoderDecoder', which gives the image to the image-guided necks "
        'of the list.'
    )
