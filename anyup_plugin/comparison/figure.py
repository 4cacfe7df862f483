"""The comparison figure: image, ground truth, and each method's prediction and feature PCA."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from anyup_plugin.apis.visualization import denormalize_image, joint_pca_rgb
from anyup_plugin.utils.io import atomic_write

__all__ = [
    'FigureSampleCollector',
    'load_figure_samples',
    'save_figure_samples',
    'write_figure',
]

#: The parts of one sample: the image (H, W, 3) uint8, the ground truth and prediction
#: (segmentation (H, W) int labels; depth (H, W) metres; normals (H, W, 3)), the PCA of the
#: upsampled features (h', w', 3) uint8.
SAMPLE_KEYS: tuple[str, ...] = ('image', 'gt', 'pred', 'pca')


def _first_map(levels: object) -> Tensor:
    """The (B, C, h, w) map of the last level of a backbone's or neck's output."""
    if isinstance(levels, Tensor):
        return levels
    level = list(levels)[-1]
    if isinstance(level, (list, tuple)):  # [map, cls_token]
        level = level[0]
    return level


def _targets(sample, task: str) -> tuple[np.ndarray, np.ndarray]:
    if task == 'segmentation':
        return sample.gt_sem_seg.data[0].cpu().numpy(), sample.pred_sem_seg.data[0].cpu().numpy()
    if task == 'depth':
        return (
            sample.gt_depth_map.data[0].float().cpu().numpy(),
            sample.pred_depth_map.data[0].float().cpu().numpy(),
        )
    gt = sample.gt_normal_map.data[:3].float().cpu().numpy().transpose(1, 2, 0)
    pred = sample.pred_normal_map.data[:3].float().cpu().numpy().transpose(1, 2, 0)
    return gt, pred


def _uint8(rgb: Tensor) -> np.ndarray:
    """(3, H, W) in [0, 1] -> (H, W, 3) uint8."""
    return (rgb.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()


class FigureSampleCollector:
    """Keeps the first ``num_images`` test images' panels while a segmentor evaluates.

    Forward hooks on the backbone (its input, the normalised image, and its last map) and on
    the neck (the upsampled map) see each batch; :meth:`add` then pairs them with the batch's
    predictions. The PCA of each image's upsampled features is fitted on its backbone map and
    applied to the neck's output, as :func:`~anyup_plugin.apis.visualization.joint_pca_rgb`
    does, so the colours show what the upsampler made of the backbone's features. Collecting
    during the test loop costs no extra forward.

    Args:
        model: An MMSeg segmentor with ``backbone`` and ``neck``.
        task: ``'segmentation'``, ``'depth'`` or ``'normals'``.
        num_images: How many images to keep.
    """

    def __init__(self, model: nn.Module, task: str, num_images: int) -> None:
        self.model = model
        self.task = task
        self.num_images = num_images
        self.samples: list[dict[str, np.ndarray]] = []
        self._captured: dict[str, object] = {}
        self._handles: list = []

    def attach(self) -> FigureSampleCollector:
        """Registers the forward hooks."""

        def backbone_hook(module, args, output):
            self._captured['image'], self._captured['low'] = args[0], output

        def neck_hook(module, args, output):
            self._captured['high'] = output

        self._handles = [
            self.model.backbone.register_forward_hook(backbone_hook),
            self.model.neck.register_forward_hook(neck_hook),
        ]
        return self

    def detach(self) -> None:
        """Removes the hooks."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    @torch.no_grad()
    def add(self, predictions: Sequence) -> None:
        """Adds the panels of a batch's predictions (data samples), up to ``num_images``."""
        if len(self.samples) >= self.num_images or 'high' not in self._captured:
            return
        image = self._captured['image']
        low, high = _first_map(self._captured['low']), _first_map(self._captured['high'])
        for i, sample in enumerate(predictions[: self.num_images - len(self.samples)]):
            _, pca = joint_pca_rgb(low[i], high[i])
            gt, pred = _targets(sample, self.task)
            self.samples.append(
                {
                    'image': _uint8(denormalize_image(image[i].float())),
                    'gt': gt,
                    'pred': pred,
                    'pca': _uint8(pca[0]),
                }
            )


def save_figure_samples(path: str | os.PathLike, samples: Sequence[Mapping[str, np.ndarray]]):
    """Saves :func:`collect_figure_samples`'s output as one ``.npz`` (all or nothing)."""
    arrays = {
        f'{key}_{i}': np.asarray(s[key]) for i, s in enumerate(samples) for key in SAMPLE_KEYS
    }
    with atomic_write(path, suffix='.npz') as tmp:
        np.savez_compressed(tmp, **arrays)


def load_figure_samples(path: str | os.PathLike) -> list[dict[str, np.ndarray]]:
    """Reads what :func:`save_figure_samples` wrote."""
    with np.load(path) as data:
        count = len([k for k in data.files if k.startswith('image_')])
        return [{key: data[f'{key}_{i}'] for key in SAMPLE_KEYS} for i in range(count)]


def _label_colours(labels: np.ndarray) -> np.ndarray:
    """Segmentation labels -> RGB with one fixed colour per class; ignored (255) black."""
    palette = np.random.default_rng(20).integers(40, 256, size=(256, 3)).astype(np.uint8)
    palette[255] = 0
    return palette[np.clip(labels, 0, 255).astype(np.int64)]


def _normal_colours(normals: np.ndarray) -> np.ndarray:
    """Unit normals (H, W, 3) -> RGB in [0, 1]; zero (invalid) normals black."""
    rgb = (normals + 1.0) / 2.0
    rgb[np.linalg.norm(normals, axis=-1) < 1e-6] = 0.0
    return np.clip(rgb, 0.0, 1.0)


def write_figure(
    path: str | os.PathLike,
    task: str,
    method_samples: Mapping[str, Sequence[Mapping[str, np.ndarray]]],
    method_labels: Mapping[str, str] | None = None,
    title: str | None = None,
) -> Path:
    """Draws one row per image: image, ground truth, then each method's prediction and PCA.

    Drawn with matplotlib's Agg canvas (no display, no global pyplot state). Depth shares one
    colour scale per row, set by the ground truth's valid pixels (invalid depth grey);
    normals are shown as RGB = (n + 1) / 2.

    Args:
        path: The PNG to write (all or nothing).
        task: ``'segmentation'``, ``'depth'`` or ``'normals'``.
        method_samples: Method key -> its samples (:func:`collect_figure_samples`); the image
            and ground truth are taken from the first method.
        method_labels: Display names of the methods.
        title: The figure's title.

    Returns:
        ``path`` as a Path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    labels = dict(method_labels or {})
    methods = list(method_samples)
    if not methods:
        raise ValueError('write_figure needs the samples of at least one method')
    rows = min(len(method_samples[m]) for m in methods)
    if rows == 0:
        raise ValueError('write_figure: a method has no samples')
    cols = 2 + 2 * len(methods)
    figure = Figure(figsize=(1.8 * cols, 1.9 * rows + (0.4 if title else 0)))
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, cols, squeeze=False)
    reference = method_samples[methods[0]]
    for row in range(rows):
        gt = reference[row]['gt']
        depth_range = None
        if task == 'depth':
            valid = gt[gt > 0]
            depth_range = (float(valid.min()), float(valid.max())) if valid.size else (0.0, 10.0)
        panels = [('image', reference[row]['image']), ('ground truth', gt)]
        for method in methods:
            name = labels.get(method, method)
            panels.append((f'{name}\nprediction', method_samples[method][row]['pred']))
            panels.append((f'{name}\nfeatures (PCA)', method_samples[method][row]['pca']))
        for col, (heading, data) in enumerate(panels):
            axis = axes[row][col]
            axis.set_axis_off()
            if row == 0:
                axis.set_title(heading, fontsize=8)
            is_target = col == 1 or (col >= 2 and col % 2 == 0)
            if not is_target:
                axis.imshow(data)
            elif task == 'segmentation':
                axis.imshow(_label_colours(data), interpolation='nearest')
            elif task == 'depth':
                shown = np.ma.masked_where(data <= 0, data) if col == 1 else data
                cmap = _grey_bad('magma_r')
                axis.imshow(shown, cmap=cmap, vmin=depth_range[0], vmax=depth_range[1])
            else:
                axis.imshow(_normal_colours(np.asarray(data, np.float64)))
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    with atomic_write(path, suffix='.png') as tmp:
        figure.savefig(tmp, dpi=100)
    return Path(path)


def _grey_bad(name: str):
    from matplotlib import colormaps

    cmap = colormaps[name].copy()
    cmap.set_bad('0.6')
    return cmap
