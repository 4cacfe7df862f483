"""Upsampling necks: one neck whose method is a config key, and its AnyUp and bilinear defaults."""

from .anyup_neck import AnyUpNeck
from .bilinear_neck import BilinearNeck
from .image_guided_neck import ImageGuidedNeck
from .upsampler_neck import UpsamplerNeck

__all__ = ['AnyUpNeck', 'BilinearNeck', 'ImageGuidedNeck', 'UpsamplerNeck']
