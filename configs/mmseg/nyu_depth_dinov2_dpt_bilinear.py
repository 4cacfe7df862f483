"""NYUv2 depth, Probe3D's DPT probe on four bilinearly upsampled DINOv2 layers (baseline twin).

Protocol: as ``nyu_depth_dinov2_dpt.py``, the only change being the neck: the four maps are
upsampled bilinearly (``align_corners=False``) to stride 4 instead of by AnyUp.

No paper number (AnyUp reports linear probes only).

Run: ``python tools/train.py configs/mmseg/nyu_depth_dinov2_dpt_bilinear.py``.
"""

_base_ = ['./nyu_depth_dinov2_dpt.py']

model = dict(neck=dict(_delete_=True, type='BilinearNeck', in_index=[0, 1, 2, 3], output_stride=4))
