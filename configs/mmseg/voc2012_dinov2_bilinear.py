"""PASCAL VOC 2012 linear probe on bilinearly upsampled DINOv2 ViT-S/14 features.

Protocol: as ``voc2012_dinov2.py`` (JAFAR linear probe, AnyUp's per-epoch cosine fix), with
the bilinear neck instead of AnyUp.

Paper number (AnyUp, segmentation linear-probe table, "Bilinear" row, DINOv2 ViT-S/14):
81.43 mIoU / 95.38 pixel accuracy.

Run: ``python tools/train.py configs/mmseg/voc2012_dinov2_bilinear.py``.
"""

_base_ = ['./voc2012_dinov2.py']

model = dict(neck=dict(_delete_=True, type='BilinearNeck'))
