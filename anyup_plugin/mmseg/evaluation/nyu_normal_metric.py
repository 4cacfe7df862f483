"""Probe3D's surface-normal metrics as an MMEngine metric."""

from __future__ import annotations

from mmseg.registry import METRICS
from torch import Tensor

from anyup_plugin.evaluation import NORMAL_METRIC_KEYS, normal_metrics

from .per_image_metric import PerImageMetric

__all__ = ['NYUNormalMetric']


@METRICS.register_module()
class NYUNormalMetric(PerImageMetric):
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

    metric_keys = NORMAL_METRIC_KEYS

    def score(self, sample: dict) -> dict[str, Tensor]:
        """The image's scores, each a (1,) tensor."""
        pred = sample['pred_normal_map']['data'].float().cpu()
        gt = sample['gt_normal_map']['data'].float().cpu()
        depth = sample['gt_depth_map']['data'].float().cpu()[0]
        valid = (depth > 0) & (depth <= self.max_depth)
        return normal_metrics(pred[None], gt[None], valid[None])
