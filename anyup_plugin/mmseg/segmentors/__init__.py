"""Segmentors that pass the input image to image-guided necks."""

from .anyup_encoder_decoder import AnyUpEncoderDecoder

__all__ = ['AnyUpEncoderDecoder']
