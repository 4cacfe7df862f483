"""Decode heads: the linear probe."""

from .linear_probe_head import LinearProbeHead

__all__ = ['LinearProbeHead']
