"""Demo: the NYUv2 surface-normal probe, shrunk to train in minutes on a CPU on generated scenes.

Not a paper protocol (no paper number). Same model, losses, metrics and pipeline steps as
``nyu_normals_dinov2.py`` (frozen DINOv2 ViT-S/14 architecture, frozen AnyUp to the input
resolution, linear normal probe with uncertainty, angular loss, per-image angular RMSE and
within-threshold metrics), with what makes it run anywhere:

- data: rooms with planes and boxes whose depth and normals are exact
  (``anyup_plugin.testing.nyu_scenes``), written in the converter's layout under
  ``data/demo_nyu`` (240x320 frames: centre crop 240, resized to 112, i.e. 8x8 tokens);
- weights: random backbone and random AnyUp (nothing is downloaded): the probe learns from
  random-feature colour and position cues, so the numbers show the pipeline works, not the
  paper's quality;
- 4 epochs of 16 training frames, batch 4, lr 5e-3 (the protocol's 5e-4 barely moves a probe
  in 16 steps), no data-loader workers; AnyUp at 112 px dominates the time (~1-3 s per image
  on a CPU).

End to end, AnyUp and its bilinear twin: ``python tools/demo.py --task normals``.
"""

_base_ = ['./nyu_normals_dinov2.py']

data_root = 'data/demo_nyu'
crop_size = 240
image_size = 112
max_epochs = 4

model = dict(backbone=dict(checkpoint=None), neck=dict(checkpoint=None))
# The protocol's pipelines at the demo's sizes.
train_pipeline = _base_.train_pipeline
test_pipeline = _base_.test_pipeline
for _step in train_pipeline + test_pipeline:
    if _step.type == 'SegCenterCrop':
        _step.size = crop_size
    elif _step.type in ('NYURandomResizedCrop', 'NYUResize'):
        _step.size = image_size
del _step
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, ann_file='splits/train.txt', pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
optim_wrapper = dict(optimizer=dict(lr=5e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, begin=0, end=1, by_epoch=True,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', begin=1, end=max_epochs, eta_min_ratio=0.01, by_epoch=True,
         convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs)
default_hooks = dict(logger=dict(interval=10))
