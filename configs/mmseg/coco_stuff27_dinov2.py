"""COCO-Stuff (27 coarse classes) linear probe on DINOv2 ViT-S/14 + AnyUp (paper setting).

Protocol: the JAFAR semantic-segmentation linear probe with AnyUp's per-epoch cosine fix
(AnyUp, Wimmer et al., ICLR 2026, arXiv 2510.12764): 448x448 centre crops, frozen DINOv2 ViT-S/14
(last block after the final norm), frozen AnyUp (``anyup_paper``) to 448x448, 1x1 conv
probe, AdamW 5e-4 / wd 1e-5, 20 epochs, batch 2. Data: COCO-Stuff 164k images on the
curated lists ``curated/{train2017,val2017}/Coco164kFull_Stuff_Coarse.txt`` (IIC/STEGO,
also FeatUp, LoftUp, JAFAR), fine ``stuffthingmaps`` labels mapped to the 27 coarse
super-categories; not MMSeg's 171-class COCO-Stuff164k. Layout: see ``CocoStuff27Dataset``
(STEGO's download script produces it).

Paper number (AnyUp, segmentation linear-probe table, DINOv2 ViT-S/14):
62.16 mIoU / 81.37 pixel accuracy
(bilinear baseline 59.48 / 79.32: ``coco_stuff27_dinov2_bilinear.py``).

Weights: see ``ade20k_dinov2.py``.
Run: ``python tools/train.py configs/mmseg/coco_stuff27_dinov2.py``.
"""

_base_ = [
    './_base_/models/dinov2_vits14_anyup_probe.py',
    './_base_/datasets/coco_stuff27_probe448.py',
    './_base_/schedules/probe_20e.py',
    './_base_/default_runtime.py',
]

backbone_checkpoint = 'checkpoints/vit_small_patch14_dinov2.lvd142m.safetensors'
anyup_checkpoint = 'anyup_paper'
data_root = 'data/cocostuff'

model = dict(
    backbone=dict(checkpoint=backbone_checkpoint),
    neck=dict(checkpoint=anyup_checkpoint),
    decode_head=dict(num_classes=27),
)
train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
