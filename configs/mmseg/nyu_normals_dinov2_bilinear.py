"""NYUv2 surface normals, linear probe on bilinearly upsampled DINOv2 features (baseline twin).

Protocol: as ``nyu_normals_dinov2.py`` (Probe3D normal probe at 224 px, linear head with
uncertainty), the only change being the neck: bilinear interpolation (``align_corners=False``)
of the 16x16 tokens to 224x224 instead of AnyUp.

Paper number (AnyUp Tab. 3, "Bilinear" row, DINOv2 ViT-S/14): angular RMSE 32.70 degrees,
within 11.25 / 22.5 / 30 degrees: 0.26 / 0.53 / 0.66.

Run: ``python tools/train.py configs/mmseg/nyu_normals_dinov2_bilinear.py``.
"""

_base_ = ['./nyu_normals_dinov2.py']

model = dict(neck=dict(_delete_=True, type='BilinearNeck'))
