"""ADE20K linear probe on bilinearly upsampled DINOv2 ViT-S/14 features (baseline twin).

Protocol: as ``ade20k_dinov2.py`` (JAFAR linear probe with AnyUp's per-epoch cosine fix),
the only change being the neck: bilinear interpolation (``align_corners=False``) of the
32x32 tokens to 448x448 instead of AnyUp.

Paper number (AnyUp, segmentation linear-probe table, "Bilinear" row, DINOv2 ViT-S/14):
40.54 mIoU / 74.12 pixel accuracy.

Run: ``python tools/train.py configs/mmseg/ade20k_dinov2_bilinear.py``.
"""

_base_ = ['./ade20k_dinov2.py']

model = dict(neck=dict(_delete_=True, type='BilinearNeck'))
