"""Probe3D's depth metrics as an MMEngine metric."""

from __future__ import annotations

from mmseg.registry import METRICS
from torch import Tensor

from anyup_plugin.evaluation import DEPTH_METRIC_KEYS, depth_metrics

from .per_image_metric import PerImageMetric

__all__ = ['NYUDepthMetric']


@METRICS.register_module()
class NYUDepthMetric(PerImageMetric):
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

    metric_keys = DEPTH_METRIC_KEYS

    def score(self, sample: dict) -> dict[str, Tensor]:
        """The image's scores, each a (1,) tensor."""
        pred = sample['pred_depth_map']['data'].float().cpu()
        gt = sample['gt_depth_map']['data'].float().cpu()
        return depth_metrics(pred[None], gt[None], max_depth=self.max_depth)
