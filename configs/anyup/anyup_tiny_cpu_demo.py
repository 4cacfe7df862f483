# A tiny CPU run of the whole recipe (a few minutes on 2 cores), for trying the trainer out and
# for the tests: a random-weight 2-block ViT with patch 4 as the teacher, 64 px images, 32 px
# input/guidance and crops (8 x 8 low-res features upsampled to 16 x 16), a narrow student
# (qk_dim 32 instead of 128), on synthetic images (15 % held out for validation).
# Make the images first:  python tools/make_demo_images.py   (-> data/anyup_demo)
_base_ = ['./_base_/default_runtime.py']

image_size = 64
input_size = 32
data_root = 'data/anyup_demo'
data_hint = 'run `python tools/make_demo_images.py` (it writes data/anyup_demo)'

model = dict(
    type='AnyUpDistillationModel',
    student=dict(type='AnyUp', window_ratio=0.1, qk_dim=32),
    teachers=dict(
        tiny_vit=dict(
            type='FrozenTimmEncoder',
            model_name='vit_small_patch8_224',
            pretrained=False,
            patch_size=4,
            embed_dim=64,
            depth=2,
            num_heads=2,
            img_size=input_size,
        ),
    ),
    multi_crop=dict(type='MultiCrop', input_size=input_size, crop_size=input_size, num_crops=4),
    image_size=image_size,
    loss_weights=dict(crop=1.0, self_consistency=0.1, input_consistency=0.1),
    data_preprocessor=dict(type='AnyUpDataPreprocessor'),
)

train_pipeline = [
    dict(type='LoadImage'),
    dict(type='ResizeCenterCrop', size=image_size),
    dict(type='GuidanceAugmentation', size=input_size),
    dict(type='PackAnyUpInputs', keys=['guidance_aug']),
]
val_pipeline = [
    dict(type='LoadImage'),
    dict(type='ResizeCenterCrop', size=image_size),
    dict(type='PackAnyUpInputs'),
]
train_dataloader = dict(
    batch_size=4,
    num_workers=1,
    # Fresh workers on resume get their random state back (an infinite sampler never
    # restarts them, so persistence would save nothing).
    persistent_workers=False,
    sampler=dict(type='ResumableInfiniteSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(
        type='ImageFolderDataset',
        data_root=data_root,
        data_hint=data_hint,
        min_size=image_size,
        split='train',
        holdout_fraction=0.15,
        pipeline=train_pipeline,
    ),
)
val_dataloader = dict(
    batch_size=8,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'),
    dataset=dict(
        type='ImageFolderDataset',
        data_root=data_root,
        data_hint=data_hint,
        min_size=image_size,
        split='val',
        holdout_fraction=0.15,
        pipeline=val_pipeline,
    ),
)
test_dataloader = val_dataloader
val_evaluator = dict(type='UpsamplingMetric')
test_evaluator = val_evaluator

# lr 1e-3 instead of the recipe's 2e-4, so that the student overtakes bilinear upsampling on
# held-out images within a few dozen steps.
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=1e-5),
)
param_scheduler = None

train_cfg = dict(type='ResumableIterBasedTrainLoop', max_iters=300, val_interval=100)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

log_processor = dict(window_size=10)
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=100, max_keep_ckpts=2),
)
custom_hooks = [dict(type='ExportStudentHook', interval=100)]
