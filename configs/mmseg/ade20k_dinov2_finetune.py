"""Fine-tuning template: trainable AnyUp neck, partly trainable DINOv2, ASPP decode head.

Not a paper protocol (no paper number): the way a user adapts their own segmentation model
with AnyUp. On ADE20K (151 classes, the probe data pipeline of ``ade20k_dinov2.py``):

- backbone: DINOv2 ViT-S/14 (last block after the final norm) with its last 2 blocks and
  final norm trainable, the rest frozen;
- neck: AnyUp from the published ``anyup_paper`` weights, trainable, upsampling the 32x32
  tokens to stride 4 (112x112 at 448 px) guided by the image;
- decode head: MMSeg's DeepLabV3 ``ASPPHead`` (dilations 1/6/12/18 at stride 4, BN,
  dropout 0.1), cross-entropy ignoring 255; logits resized to the label for the loss;
- optimiser: the probe schedule (AdamW 5e-4, wd 1e-5, 20 epochs, per-epoch cosine, batch 2)
  with a 0.1 learning-rate multiplier on the pretrained backbone and neck.

Memory: AnyUp trained with gradients keeps its full-resolution image encoders' activations
(several GB per 448 image); use ``--amp`` on GPUs with less than 24 GB. For multi-GPU runs
switch ``norm_cfg`` to ``SyncBN``.

Weights: see ``ade20k_dinov2.py``.
Run: ``python tools/train.py configs/mmseg/ade20k_dinov2_finetune.py``.
"""

_base_ = ['./ade20k_dinov2.py']

norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    backbone=dict(trainable_blocks=2),
    neck=dict(frozen=False, output_stride=4),
    decode_head=dict(
        _delete_=True,
        type='ASPPHead',
        in_channels=384,
        in_index=0,
        channels=256,
        dilations=(1, 6, 12, 18),
        dropout_ratio=0.1,
        num_classes=151,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0, avg_non_ignore=True
        ),
    ),
)
optim_wrapper = dict(
    paramwise_cfg=dict(
        custom_keys={'backbone': dict(lr_mult=0.1), 'neck': dict(lr_mult=0.1)}
    )
)
