"""Probe3D's surface-normal metrics as an MMEngine metric."""

from __future__ import annotations

from collections.abc import Sequence

from mmengine.evaluator import BaseMetric
from mmseg.registry import METRICS

from anyup_plugin.evaluation import NORMAL_METRIC_KEYS, normal_metrics

from .per_image_average import average_over_images

__all__ = ['NYUNormalMetric']


@METRICS.register_module()
class NYUNormalMetric(BaseMetric):
    """Angular RMSE (degrees) and the shares under 11.25, 22.5 and 30 degrees, per image.

    Each image is scored by :func:`anyup_plugin.evaluation.normal_metrics` over the pixels
    whose ground-truth depth is in (0, ``max_depth``] (Probe3D scores normals where depth is
    valid); reported numbers are means over images (``rmse`` is averaged per image, as in
    Probe3D). Images without a valid pixel are left out and counted in the log; zero-length
    ground-truth normals at valid pixels and NaN predictions are errors naming the file.

    Args:
        max_depth: Largest valid ground-truth depth (metres).
        collect_device: As for ``BaseMetric``.
        prefix: As for ``BaseMetric``.
    """

    default_prefix = ''  # the protocol's keys as they are (rmse, delta1, ...)

    def __init__(
        self, max_depth: float = 10.0, collect_device: str = 'cpu', prefix: str | None = None
    ) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.max_depth = max_depth

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        """Scores each image of a batch."""
        for sample in data_samples:
            path = sample.get('img_path', '?')
            pred = sample['pred_normal_map']['data'].float().cpu()
            gt = sample['gt_normal_map']['data'].float().cpu()
            depth = sample['gt_depth_map']['data'].float().cpu()[0]
            valid = (depth > 0) & (depth <= self.max_depth)
            try:
                scores = normal_metrics(pred[None], gt[None], valid[None])
            except ValueError as err:
                raise ValueError(f'{path}: {err}') from err
            row = {k: float(v[0]) for k, v in scores.items()}
            row['img_path'] = path
            self.results.append(row)

    def compute_metrics(self, results: list) -> dict[str, float]:
        """Means over the scored images."""
        return average_over_images(results, NORMAL_METRIC_KEYS, type(self).__name__)
