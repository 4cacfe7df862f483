"""Dataset averages of per-image scores, leaving out (and counting) images with no score."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

from mmengine.logging import print_log

__all__ = ['average_over_images']


def average_over_images(rows: Sequence[dict], keys: Sequence[str], name: str) -> dict[str, float]:
    """Means of ``keys`` over ``rows`` (one dict of floats per image), skipping NaN images.

    An image is NaN when it has no valid pixel; it is excluded from every mean and the count
    is logged (Probe3D scores such images 0 instead, which lowers the means).
    """
    empty = [any(math.isnan(r[k]) for k in keys) for r in rows]
    scored = [r for r, e in zip(rows, empty) if not e]
    skipped = [r.get('img_path', '?') for r, e in zip(rows, empty) if e]
    if skipped:
        print_log(
            f'{name}: {len(skipped)} of {len(rows)} images have no valid ground-truth pixel '
            f'and are left out of the averages (first: {skipped[:3]})',
            logger='current',
            level=logging.WARNING,
        )
    if not scored:
        print_log(f'{name}: no image could be scored', logger='current', level=logging.ERROR)
        return {k: math.nan for k in keys}
    print_log(f'{name}: averaged over {len(scored)} images', logger='current')
    return {k: sum(r[k] for r in scored) / len(scored) for k in keys}
