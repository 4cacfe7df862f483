"""NYUv2 depth, linear probe on bilinearly upsampled DINOv2 ViT-S/14 features (baseline twin).

Protocol: as ``nyu_depth_dinov2.py`` (Probe3D depth probe at 224 px, linear bin-depth head),
the only change being the neck: bilinear interpolation (``align_corners=False``) of the 16x16
tokens to 224x224 instead of AnyUp.

Paper number (AnyUp Tab. 3, "Bilinear" row, DINOv2 ViT-S/14): RMSE 0.4925, delta1 0.8081,
rel. RMSE 0.3582, rel. delta1 0.9112.

Run: ``python tools/train.py configs/mmseg/nyu_depth_dinov2_bilinear.py``.
"""

_base_ = ['./nyu_depth_dinov2.py']

model = dict(neck=dict(_delete_=True, type='BilinearNeck'))
