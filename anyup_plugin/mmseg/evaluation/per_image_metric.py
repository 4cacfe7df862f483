"""Base of the NYUv2 metrics: score each image, average over the images that have a score."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log
from torch import Tensor

__all__ = ['PerImageMetric', 'average_over_images']


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


class PerImageMetric(BaseMetric):
    """Scores every image with :meth:`score` and reports the means over the scored images.

    Subclasses set :attr:`metric_keys` and implement :meth:`score`. A ``ValueError`` raised
    while scoring (bad prediction or ground truth) is re-raised naming the image file.

    Args:
        max_depth: Largest valid ground-truth depth (metres).
        collect_device: As for ``BaseMetric``.
        prefix: As for ``BaseMetric``.
    """

    default_prefix = ''  # the protocol's keys as they are (rmse, delta1, ...)
    #: The keys :meth:`score` returns and :meth:`compute_metrics` averages.
    metric_keys: tuple[str, ...] = ()

    def __init__(
        self, max_depth: float = 10.0, collect_device: str = 'cpu', prefix: str | None = None
    ) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.max_depth = max_depth

    def score(self, sample: dict) -> dict[str, Tensor]:
        """One image's scores, each a (1,) tensor (NaN when it has no valid pixel)."""
        raise NotImplementedError

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        """Scores each image of a batch."""
        for sample in data_samples:
            path = sample.get('img_path', '?')
            try:
                scores = self.score(sample)
            except ValueError as err:
                raise ValueError(f'{path}: {err}') from err
            row = {k: float(v[0]) for k, v in scores.items()}
            row['img_path'] = path
            self.results.append(row)

    def compute_metrics(self, results: list) -> dict[str, float]:
        """Means over the scored images."""
        return average_over_images(results, self.metric_keys, type(self).__name__)
