"""Validation metric of the AnyUp trainer: is the student better than bilinear upsampling?"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from mmengine.evaluator import BaseMetric

from .registry import METRICS

__all__ = ['UpsamplingMetric']


@METRICS.register_module()
class UpsamplingMetric(BaseMetric):
    """Averages the per-image scores of :meth:`AnyUpDistillationModel.predict` over held-out images.

    For every teacher ``t`` it reports ``t/student/loss``, ``t/bilinear/loss`` (the
    reconstruction loss, lower is better), ``t/student/cosine``, ``t/bilinear/cosine`` (mean
    per-pixel cosine similarity to the targets, higher is better) and ``t/cosine_gain``
    (student minus bilinear cosine). With several teachers, the same keys without the teacher
    prefix hold the mean over teachers. ``save_best`` can use e.g. ``'student/cosine'``.

    Args:
        collect_device: Where results are gathered across processes (``'cpu'`` or ``'gpu'``).
        prefix: Optional prefix of every key.
    """

    default_prefix = 'upsampling'

    def __init__(self, collect_device: str = 'cpu', prefix: str | None = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)

    def process(self, data_batch: Any, data_samples: Sequence[dict[str, float]]) -> None:
        """Stores the per-image score dicts."""
        self.results.extend(dict(s) for s in data_samples)

    def compute_metrics(self, results: list[dict[str, float]]) -> dict[str, float]:
        """Means over images, per teacher and over teachers."""
        sums: dict[str, float] = defaultdict(float)
        counts: dict[str, int] = defaultdict(int)
        for result in results:
            for key, value in result.items():
                sums[key] += float(value)
                counts[key] += 1
        metrics = {key: sums[key] / counts[key] for key in sums}
        teachers = sorted({key.split('/')[0] for key in metrics})
        for teacher in teachers:
            metrics[f'{teacher}/cosine_gain'] = (
                metrics[f'{teacher}/student/cosine'] - metrics[f'{teacher}/bilinear/cosine']
            )
        if len(teachers) == 1:
            # Drop the teacher prefix: one teacher, short keys.
            (teacher,) = teachers
            return {key[len(teacher) + 1 :]: value for key, value in metrics.items()}
        for suffix in (
            'student/loss',
            'student/cosine',
            'bilinear/loss',
            'bilinear/cosine',
            'cosine_gain',
        ):
            values = [metrics[f'{t}/{suffix}'] for t in teachers]
            metrics[suffix] = sum(values) / len(values)
        return metrics
