"""ADE20K linear probe on DINOv2 ViT-S/14 features upsampled by AnyUp (paper setting).

Protocol: the JAFAR semantic-segmentation linear probe with AnyUp's fix (cosine schedule
stepped per epoch), as used in AnyUp (Wimmer et al., ICLR 2026, arXiv 2510.12764). 448x448 centre
crops (short side resized to 448), frozen DINOv2 ViT-S/14 (timm
``vit_small_patch14_dinov2.lvd142m``, last block after the final LayerNorm, 32x32 patch
tokens), frozen AnyUp (published ``anyup_paper`` weights) upsampling 14x to 448x448 guided
by the same image, one 1x1 conv probe, cross-entropy ignoring 255, AdamW 5e-4 / wd 1e-5,
20 epochs, batch 2. ADE20K with 151 classes (label 0 "other" is a class, unlike MMSeg's
150-class reduce_zero_label setting), 20,210 train / 2,000 val images.

Paper number (AnyUp, segmentation linear-probe table, DINOv2 ViT-S/14):
42.43 mIoU / 75.85 pixel accuracy
(bilinear baseline 40.54 / 74.12: ``ade20k_dinov2_bilinear.py``).

Weights (no download at build time unless named):
- backbone: timm's ``model.safetensors`` from
  https://huggingface.co/timm/vit_small_patch14_dinov2.lvd142m, saved as the path in
  ``backbone_checkpoint`` (Meta's ``dinov2_vits14_pretrain.pth`` also loads: timm converts it).
- AnyUp: ``'anyup_paper'`` downloads the published checkpoint (CC-BY-4.0, by the AnyUp
  authors) into torch's hub cache when online; offline, the error says where to put
  ``anyup_paper.pth``. A local path works too.

Run: ``python tools/train.py configs/mmseg/ade20k_dinov2.py`` (or MMSeg's tools/train.py).
"""

_base_ = [
    './_base_/models/dinov2_vits14_anyup_probe.py',
    './_base_/datasets/ade20k151_probe448.py',
    './_base_/schedules/probe_20e.py',
    './_base_/default_runtime.py',
]

backbone_checkpoint = 'checkpoints/vit_small_patch14_dinov2.lvd142m.safetensors'
anyup_checkpoint = 'anyup_paper'
data_root = 'data/ade/ADEChallengeData2016'

model = dict(
    backbone=dict(checkpoint=backbone_checkpoint),
    neck=dict(checkpoint=anyup_checkpoint),
    decode_head=dict(num_classes=151),
)
train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
