"""PASCAL VOC 2012 linear probe on DINOv2 ViT-S/14 + AnyUp (paper setting).

Protocol: the JAFAR semantic-segmentation linear probe with AnyUp's per-epoch cosine fix
(AnyUp, Wimmer et al., ICLR 2026, arXiv 2510.12764): 448x448 centre crops, frozen DINOv2 ViT-S/14
(last block after the final norm), frozen AnyUp (``anyup_paper``) to 448x448, 1x1 conv
probe, AdamW 5e-4 / wd 1e-5, 20 epochs, batch 2. Data: VOC 2012, 21 classes, the official
``ImageSets/Segmentation/train.txt`` (1,464) and ``val.txt`` (1,449) with the
``SegmentationClass`` labels; no SBD augmentation set.

Paper number (AnyUp, segmentation linear-probe table, DINOv2 ViT-S/14):
84.00 mIoU / 96.19 pixel accuracy
(bilinear baseline 81.43 / 95.38: ``voc2012_dinov2_bilinear.py``).

Weights: see ``ade20k_dinov2.py``.
Run: ``python tools/train.py configs/mmseg/voc2012_dinov2.py``.
"""

_base_ = [
    './_base_/models/dinov2_vits14_anyup_probe.py',
    './_base_/datasets/voc2012_probe448.py',
    './_base_/schedules/probe_20e.py',
    './_base_/default_runtime.py',
]

backbone_checkpoint = 'checkpoints/vit_small_patch14_dinov2.lvd142m.safetensors'
anyup_checkpoint = 'anyup_paper'
data_root = 'data/VOCdevkit/VOC2012'

model = dict(
    backbone=dict(checkpoint=backbone_checkpoint),
    neck=dict(checkpoint=anyup_checkpoint),
    decode_head=dict(num_classes=21),
)
train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
