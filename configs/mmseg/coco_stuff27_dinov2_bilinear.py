"""COCO-Stuff (27 coarse classes) linear probe on bilinearly upsampled DINOv2 features.

Protocol: as ``coco_stuff27_dinov2.py`` (JAFAR linear probe, AnyUp's per-epoch cosine fix),
with the bilinear neck instead of AnyUp.

Paper number (AnyUp, segmentation linear-probe table, "Bilinear" row, DINOv2 ViT-S/14):
59.48 mIoU / 79.32 pixel accuracy.

Run: ``python tools/train.py configs/mmseg/coco_stuff27_dinov2_bilinear.py``.
"""

_base_ = ['./coco_stuff27_dinov2.py']

model = dict(neck=dict(_delete_=True, type='BilinearNeck'))
