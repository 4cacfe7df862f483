# Data of the published recipe: images with a short side >= 448, resized and centre-cropped
# to 448 x 448; the guidance for the self-consistency loss is the whole image at 224 with
# photometric augmentation. Point data_root at any image folder (ImageNet's train/ works).
image_size = 448
input_size = 224
data_root = 'data/imagenet/train'
val_data_root = 'data/imagenet/val'
data_hint = (
    'download ImageNet-1k (ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from '
    'https://image-net.org/download-images.php) and extract them into data/imagenet/train and '
    'data/imagenet/val (any image folder works)'
)

train_pipeline = [
    dict(type='LoadImage', draft_size=image_size),
    dict(type='ResizeCenterCrop', size=image_size),
    dict(type='GuidanceAugmentation', size=input_size),
    dict(type='PackAnyUpInputs', keys=['guidance_aug']),
]
val_pipeline = [
    dict(type='LoadImage', draft_size=image_size),
    dict(type='ResizeCenterCrop', size=image_size),
    dict(type='PackAnyUpInputs'),
]

train_dataloader = dict(
    batch_size=4,
    num_workers=8,
    # The infinite sampler never ends a pass, so persistence saves nothing; fresh workers let a
    # resumed run restore their random state (see anyup_plugin.engine.random_state).
    persistent_workers=False,
    pin_memory=True,
    sampler=dict(type='ResumableInfiniteSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(
        type='ImageFolderDataset',
        data_root=data_root,
        data_hint=data_hint,
        min_size=image_size,
        pipeline=train_pipeline,
    ),
)
val_dataloader = dict(
    batch_size=4,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'),
    dataset=dict(
        type='ImageFolderDataset',
        data_root=val_data_root,
        data_hint=data_hint,
        min_size=image_size,
        max_images=1000,
        pipeline=val_pipeline,
    ),
)
test_dataloader = val_dataloader
val_evaluator = dict(type='UpsamplingMetric')
test_evaluator = val_evaluator
