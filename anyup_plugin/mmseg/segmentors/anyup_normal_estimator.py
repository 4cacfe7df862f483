"""A surface-normal estimator: AnyUpDepthEstimator with normal predictions."""

from __future__ import annotations

import torch.nn.functional as F
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from torch import Tensor

from .anyup_depth_estimator import AnyUpDepthEstimator

__all__ = ['AnyUpNormalEstimator']


@MODELS.register_module()
class AnyUpNormalEstimator(AnyUpDepthEstimator):
    """Predicts ``pred_normal_map`` (unit normals and kappa) instead of depth.

    Training, feature extraction and inference are :class:`AnyUpDepthEstimator`'s; the
    decode head (``NormalProbeHead``) gives (B, 4, H, W) activated predictions at the input
    size. Post-processing removes padding, undoes flips and resizes to ``ori_shape``
    bicubically (renormalising the normals), then stores ``pred_normal_map``.

    Args:
        *args: As for ``DepthEstimator``.
        **kwargs: As for ``DepthEstimator``.
    """

    def postprocess_result(
        self, normals: Tensor, data_samples: list[SegDataSample] | None = None
    ) -> list[SegDataSample]:
        """(B, 4, H, W) predictions -> data samples with ``pred_normal_map`` (4, H', W')."""
        if data_samples is None:
            data_samples = [SegDataSample() for _ in range(normals.shape[0])]
            metas = [{} for _ in data_samples]
        else:
            metas = [s.metainfo for s in data_samples]
        height, width = normals.shape[-2:]
        for i, (sample, meta) in enumerate(zip(data_samples, metas)):
            left, right, top, bottom = meta.get(
                'img_padding_size', meta.get('padding_size', [0] * 4)
            )
            pred = normals[i : i + 1, :, top : height - bottom, left : width - right].clone()
            if meta.get('flip'):
                horizontal = meta.get('flip_direction', 'horizontal') == 'horizontal'
                pred = pred.flip(dims=(3,) if horizontal else (2,))
                # A mirrored image mirrors the normals' x (or y) component too.
                pred[:, 0 if horizontal else 1] *= -1
            size = tuple(meta.get('ori_shape', pred.shape[-2:]))[:2]
            if tuple(pred.shape[-2:]) != size:
                pred = F.interpolate(
                    pred, size=size, mode='bicubic', align_corners=self.align_corners
                )
                pred[:, :3] = F.normalize(pred[:, :3], dim=1, eps=1e-6)
            sample.set_data({'pred_normal_map': PixelData(data=pred[0])})
        return data_samples
