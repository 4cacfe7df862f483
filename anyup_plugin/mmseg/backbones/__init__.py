"""Backbones: frozen timm encoders."""

from .frozen_timm_backbone import FrozenTimmBackbone as FrozenTimmBackbone  # deprecated name
from .frozen_timm_backbone import FrozenTimmMMSegBackbone

__all__ = ['FrozenTimmMMSegBackbone']
