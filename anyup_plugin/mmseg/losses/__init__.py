"""The Probe3D depth and normal losses as MMSeg loss modules (``loss_decode`` of the NYU heads)."""

from .probe_depth_loss import ProbeDepthLoss
from .probe_normal_loss import ProbeNormalLoss

__all__ = ['ProbeDepthLoss', 'ProbeNormalLoss']
