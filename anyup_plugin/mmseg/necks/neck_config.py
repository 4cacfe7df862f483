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


def check_neck_keys(owner: str, given: Mapping[str, Any], accepted: Iterable[str]) -> None:
    """Raises if ``given`` holds keys outside ``accepted``, explaining merged base necks.

    Args:
        owner: The neck's class name, e.g. ``'AnyUpNeck'``.
        given: The keyword arguments the neck could not place itself.
        accepted: The names those arguments may have (e.g. AnyUp's constructor arguments).

    Raises:
        TypeError: Naming the unknown keys and both ways to write the config.
    """
    unknown = sorted(set(given) - set(accepted))
    if not unknown:
        return
    raise TypeError(
        f'{owner} got config key(s) it does not take: {", ".join(unknown)}. Keys like these '
        'come from the neck the base config already has: MMEngine merges neck=dict(type='
        f"'{owner}', ...) into the base config's neck dict instead of replacing it. To replace "
        f"that neck, write neck=dict(_delete_=True, type='{owner}', ...). To keep it and run "
        f"{owner} before it, write a list: neck=[dict(type='{owner}', ...), "
        "{{_base_.model.neck}}] (or that neck's dict written out), with "
        "model type='AnyUpEncoderDecoder', which gives the image to the image-guided necks "
        'of the list.'
    )
