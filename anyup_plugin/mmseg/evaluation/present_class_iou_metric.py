"""MMSeg's IoU metric, reported over the classes the labels contain."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from mmengine.logging import MMLogger, print_log
from mmseg.evaluation import IoUMetric
from mmseg.registry import METRICS
from prettytable import PrettyTable

__all__ = ['PresentClassIoUMetric']


@METRICS.register_module()
class PresentClassIoUMetric(IoUMetric):
    """``IoUMetric`` whose console report lists only the classes present in the labels.

    MMSeg's ``mIoU`` averages over every class that occurs in the labels *or* the
    predictions, and its console table lists every class of the dataset (151 rows, mostly
    NaN, for ADE20K on a small dataset). This metric returns the same ``aAcc``, ``mIoU`` and
    ``mAcc`` as ``IoUMetric``, adds ``mIoU_present`` (the mean IoU over the classes with
    ground-truth pixels), and logs one line per present class to the console. The full
    per-class table still goes to the log file.

    Args:
        **kwargs: As for ``IoUMetric`` (``ignore_index``, ``prefix``, ...); only the
            ``'mIoU'`` metric is supported.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        if list(self.metrics) != ['mIoU']:
            raise ValueError(f"PresentClassIoUMetric computes 'mIoU' only, got {self.metrics}")

    def compute_metrics(self, results: list) -> dict[str, float]:
        """Metrics from the per-image (intersection, union, prediction, label) areas.

        Returns:
            ``aAcc``, ``mIoU``, ``mAcc`` (as ``IoUMetric``, in percent) and ``mIoU_present``.
        """
        intersect, union, pred_area, label_area = (sum(areas) for areas in zip(*results))
        per_class = self.total_area_to_metrics(
            intersect, union, pred_area, label_area, self.metrics, self.nan_to_num, self.beta
        )
        present = (label_area > 0).numpy()
        iou, acc = per_class['IoU'], per_class['Acc']
        metrics = {
            'aAcc': float(np.round(per_class['aAcc'] * 100, 2)),
            'mIoU': float(np.round(np.nanmean(iou) * 100, 2)),
            'mAcc': float(np.round(np.nanmean(acc) * 100, 2)),
            'mIoU_present': float(np.round(np.nanmean(iou[present]) * 100, 2)),
        }
        classes = list(self.dataset_meta['classes'])
        lines = [f'  {classes[i]:<20} IoU {iou[i] * 100:6.2f}' for i in np.flatnonzero(present)]
        print_log(
            f'IoU of the {int(present.sum())} classes in the labels:\n'
            + '\n'.join(lines)
            + f'\n  mIoU (MMSeg: classes in labels or predictions) {metrics["mIoU"]:.2f}, '
            f'mIoU over the present classes {metrics["mIoU_present"]:.2f}',
            logger='current',
        )
        _log_to_files_only(_full_table(classes, iou, acc))
        return metrics


def _full_table(classes: Sequence[str], iou: np.ndarray, acc: np.ndarray) -> str:
    table = PrettyTable()
    table.add_column('Class', list(classes))
    table.add_column('IoU', np.round(iou * 100, 2).tolist())
    table.add_column('Acc', np.round(acc * 100, 2).tolist())
    return 'per class results:\n' + table.get_string()


def _log_to_files_only(message: str) -> None:
    """Writes ``message`` to the current MMEngine logger's log files, not to the console."""
    logger = MMLogger.get_current_instance()
    record = logger.makeRecord(logger.name, logging.INFO, __file__, 0, message, None, None)
    for handler in logger.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
