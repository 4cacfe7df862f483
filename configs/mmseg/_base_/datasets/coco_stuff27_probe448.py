# COCO-Stuff, 27 coarse classes on the curated lists (IIC/STEGO), linear-probe
# pipeline: short side to 448 (antialiased bilinear; labels nearest), centre crop 448x448,
# random horizontal flip in training only; evaluation on the same 448 crop, one scale.
dataset_type = 'CocoStuff27Dataset'
data_root = 'data/cocostuff'
crop_size = 448
train_pipeline = [
    # Pillow decoding (as the reference probes' PIL loading): no EXIF rotation, which PNG
    # labels would not follow.
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
    # The metric compares predictions with the cropped label.
    dict(type='SegCenterCrop', size=crop_size, set_ori_shape=True),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=2,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='curated/train2017/Coco164kFull_Stuff_Coarse.txt',
        data_prefix=dict(img_path='images/train2017', seg_map_path='annotations/train2017'),
        pipeline=train_pipeline,
    ),
)
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='curated/val2017/Coco164kFull_Stuff_Coarse.txt',
        data_prefix=dict(img_path='images/val2017', seg_map_path='annotations/val2017'),
        pipeline=test_pipeline,
    ),
)
test_dataloader = val_dataloader
# mIoU (macro over classes, from intersections/unions summed over the whole val set) and
# pixel accuracy (aAcc).
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
