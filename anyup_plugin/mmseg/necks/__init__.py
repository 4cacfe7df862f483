"""Necks that upsample backbone maps to a stride of the input: AnyUp and the bilinear baseline."""

from .anyup_neck import AnyUpNeck
from .bilinear_neck import BilinearNeck
from .image_guided_neck import ImageGuidedNeck

__all__ = ['AnyUpNeck', 'BilinearNeck', 'ImageGuidedNeck']
