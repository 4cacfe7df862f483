"""Decode heads: the linear probe; the NYU depth and normal probes (linear or DPT)."""

from .dense_probe_head import DenseProbeHead
from .depth_probe_head import DepthProbeHead
from .linear_probe_head import LinearProbeHead
from .normal_probe_head import NormalProbeHead

__all__ = ['DenseProbeHead', 'DepthProbeHead', 'LinearProbeHead', 'NormalProbeHead']
