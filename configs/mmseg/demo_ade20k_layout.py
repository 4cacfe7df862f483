"""Demo: the ADE20K AnyUp probe, shrunk to train in minutes on a CPU on generated data.

Not a paper protocol (no paper number). Same model and pipeline as ``ade20k_dinov2.py``
(frozen DINOv2 ViT-S/14 architecture, frozen AnyUp to the input resolution, 1x1 conv probe
over the 151 ADE20K classes, AdamW 5e-4, per-epoch cosine), with what makes it run anywhere:

- data: the generated ADE20K-layout folder written by ``tools/make_demo_dataset.py``
  (``data/demo_ade20k``; sky, grass, road, buildings, trees, cars with their ADE20K labels);
- weights: random backbone and random AnyUp (nothing is downloaded), so the probe learns
  from random-feature colour and texture cues: the mIoU shows the pipeline works, not the
  paper's quality;
- 224 px crops (16x16 tokens), 4 epochs, no data-loader worker processes.

End to end (generate, train, validate, print the mIoU): ``python tools/demo.py``.

Real data and weights, same config::

    python tools/train.py configs/mmseg/demo_ade20k_layout.py --cfg-options \
        train_dataloader.dataset.data_root=data/ade/ADEChallengeData2016 \
        val_dataloader.dataset.data_root=data/ade/ADEChallengeData2016 \
        model.backbone.checkpoint=checkpoints/vit_small_patch14_dinov2.lvd142m.safetensors \
        model.neck.checkpoint=anyup_paper

(or ``python tools/demo.py --data-root ... --backbone-checkpoint ... --anyup-checkpoint
...``). For the paper's numbers use ``ade20k_dinov2.py`` (448 px, 20 epochs).
"""

_base_ = ['./ade20k_dinov2.py']

data_root = 'data/demo_ade20k/ADEChallengeData2016'
crop_size = 224
max_epochs = 4

model = dict(backbone=dict(checkpoint=None), neck=dict(checkpoint=None))

train_pipeline = [
    dict(type='LoadImageFromFile', imdecode_backend='pillow'),
    dict(type='LoadAnnotations'),
    dict(type='ResizeShortSide', size=crop_size),
    dict(type='SegCenterCrop', size=crop_size),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', imdecode_backend='pillow'),
    dict(type='LoadAnnotations'),
    dict(type='ResizeShortSide', size=crop_size),
    dict(type='SegCenterCrop', size=crop_size, set_ori_shape=True),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=train_pipeline),
)
val_dataloader = dict(
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=test_pipeline),
)
test_dataloader = val_dataloader

param_scheduler = [
    dict(type='CosineAnnealingLR', T_max=max_epochs, eta_min=0.0, by_epoch=True, begin=0,
         end=max_epochs)
]
train_cfg = dict(max_epochs=max_epochs)
default_hooks = dict(logger=dict(interval=10))
# One console line per class present in the generated labels (the 151-row table goes to the log
# file only), and the mIoU over those classes beside MMSeg's.
val_evaluator = dict(type='PresentClassIoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
