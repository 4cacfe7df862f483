"""Evaluation metrics registered in MMSegmentation's ``METRICS`` registry."""

from .present_class_iou_metric import PresentClassIoUMetric

__all__ = ['PresentClassIoUMetric']
