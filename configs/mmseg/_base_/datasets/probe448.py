# The linear-probe data protocol shared by every segmentation benchmark: short side to 448
# (antialiased bilinear; labels nearest), centre crop 448x448, random horizontal flip in
# training only; evaluation on the same 448 crop, one scale; train batch 2, val batch 1.
# The dataset files inherit this and set only the dataset type, root and file layout.
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
    dataset=dict(pipeline=train_pipeline),
)
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(pipeline=test_pipeline),
)
test_dataloader = val_dataloader
# mIoU (macro over classes, from intersections/unions summed over the whole val set) and
# pixel accuracy (aAcc).
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
