"""Probe3D's depth metrics as an MMEngine metric."""

from __future__ import annotations

from collections.abc import Sequence

from mmengine.evaluator import BaseMetric
from mmseg.registry import METRICS

from anyup_plugin.evaluation import DEPTH_METRIC_KEYS, depth_metrics

from .per_image_average import average_over_images

__all__ = ['NYUDepthMetric']


@METRICS.register_module()
class NYUDepthMetric(BaseMetric):
    """RMSE, delta1-3 and their scale-and-shift-aligned ``rel_*`` twins, averaged per image.

    Each image is scored by :func:`anyup_plugin.evaluation.depth_metrics` over its valid
    pixels (``0 < gt <= max_depth``); the reported numbers are means over images, as in
    Probe3D and AnyUp's Tab. 3. Images without a valid pixel are left out and counted in the
    log. A bad prediction or ground truth (NaN, negative depth, size mismatch) is an error
    naming the image file.

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
            pred = sample['pred_depth_map']['data'].float().cpu()
            gt = sample['gt_depth_map']['data'].float().cpu()
            try:
                scores = depth_metrics(pred[None], gt[None], max_depth=self.max_depth)
            except ValueError as err:
                raise ValueError(f'{path}: {err}') from err
            row = {k: float(v[0]) for k, v in scores.items()}
            row['img_path'] = path
            self.results.append(row)

    def compute_metrics(self, results: list) -> dict[str, float]:
        """Means over the scored images."""
        return average_over_images(results, DEPTH_METRIC_KEYS, type(self).__name__)
