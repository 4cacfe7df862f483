"""Backbones: frozen timm encoders."""

from .frozen_timm_backbone import FrozenTimmBackbone

__all__ = ['FrozenTimmBackbone']
