# NYUv2 depth in the Probe3D protocol at AnyUp's 224 px, on the layout of
# tools/convert_nyuv2.py: centre crop 480x640 -> 480x480, resize to 224x224 (image antialiased
# bilinear, depth nearest), depth > 10 m invalid. Training: Probe3D's augmentation (random
# resized crop, scale 0.5-1, ratio 1, p 0.5, labels moved with the image; colour jitter 0.2 x4
# with p 0.8). Train on GeoNet's frames (splits/geonet_trainval.txt, Probe3D's training set;
# splits/train.txt holds the 795 labelled training images), test on the 654 labelled images.
data_root = 'data/nyuv2_probe3d'
crop_size = 480  # NYUv2 frames are 480x640: the centre 480x480 (columns 80:560)
image_size = 224
max_depth = 10.0
train_pipeline = [
    dict(type='LoadImageFromFile', imdecode_backend='pillow'),
    dict(type='LoadNYUAnnotations', max_depth=max_depth),
    dict(type='SegCenterCrop', size=crop_size),
    dict(type='NYURandomResizedCrop', size=image_size, scale=(0.5, 1.0), ratio=(1.0, 1.0),
         prob=0.5),
    dict(type='RandomColorJitter', brightness=0.2, contrast=0.2, saturation=0.2, hue=0.2,
         prob=0.8),
    dict(type='PackNYUInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', imdecode_backend='pillow'),
    dict(type='LoadNYUAnnotations', max_depth=max_depth),
    dict(type='SegCenterCrop', size=crop_size),
    # Sets ori_shape to 224 too: predictions are scored against the 224x224 ground truth.
    dict(type='NYUResize', size=image_size),
    dict(type='PackNYUInputs'),
]
train_dataloader = dict(
    batch_size=8,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type='NYUv2DepthDataset', data_root=data_root,
                 ann_file='splits/geonet_trainval.txt', pipeline=train_pipeline),
)
val_dataloader = dict(
    batch_size=8,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='NYUv2DepthDataset', data_root=data_root, ann_file='splits/test.txt',
                 pipeline=test_pipeline, test_mode=True),
)
test_dataloader = val_dataloader
# Per image over valid pixels, then the mean over images: rmse, delta1-3, rel_* (after a
# per-image least-squares scale and shift).
val_evaluator = dict(type='NYUDepthMetric', max_depth=max_depth)
test_evaluator = val_evaluator
