"""Demo: the VOC 2012 AnyUp probe, shrunk to train in minutes on a CPU on generated data.

Not a paper protocol (no paper number). Same model, dataset class and pipeline as
``voc2012_dinov2.py`` (frozen DINOv2 ViT-S/14 architecture, frozen AnyUp to the input
resolution, 1x1 conv probe over the 21 VOC classes, AdamW 5e-4, per-epoch cosine), with
what makes it run anywhere:

- data: generated scenes in the VOC 2012 layout
  (``anyup_plugin.testing.write_voc2012_layout_dataset``; palette PNGs with the cars as
  ``car``, everything else background, and VOC's 255 band along the car outlines);
- weights: random backbone and random AnyUp (nothing is downloaded): the mIoU shows the
  pipeline works, not the paper's quality;
- 224 px crops (16x16 tokens), 4 epochs, no data-loader worker processes.

End to end with bilinear beside AnyUp: ``python tools/compare_upsamplers.py --demo
--benchmark voc2012 --methods anyup,bilinear --out work_dirs/compare_voc_demo`` (it
writes the data and shrinks this config further). For the paper's numbers use
``voc2012_dinov2.py`` (448 px, 20 epochs).
"""

_base_ = ['./voc2012_dinov2.py']

data_root = 'data/demo_voc2012/VOCdevkit/VOC2012'
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
# One console line per class present in the generated labels, and the mIoU over those classes
# beside MMSeg's.
val_evaluator = dict(type='PresentClassIoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
