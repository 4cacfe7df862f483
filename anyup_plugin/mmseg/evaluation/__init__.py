"""Evaluation metrics registered in MMSegmentation's ``METRICS`` registry."""

from .nyu_depth_metric import NYUDepthMetric
from .nyu_normal_metric import NYUNormalMetric
from .present_class_iou_metric import PresentClassIoUMetric

__all__ = ['NYUDepthMetric', 'NYUNormalMetric', 'PresentClassIoUMetric']
