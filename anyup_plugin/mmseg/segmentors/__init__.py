"""Segmentors and depth/normal estimators that pass the input image to image-guided necks."""

from .anyup_depth_estimator import AnyUpDepthEstimator
from .anyup_encoder_decoder import AnyUpEncoderDecoder
from .anyup_normal_estimator import AnyUpNormalEstimator

__all__ = ['AnyUpDepthEstimator', 'AnyUpEncoderDecoder', 'AnyUpNormalEstimator']
