# The published single-encoder recipe (Wimmer et al., AnyUp, ICLR 2026; `anyup_paper.pth`):
# teacher DINOv2 ViT-S/14 (last block, final norm, patch tokens), 448 images, 224 input and
# guidance, 4 patch-aligned 224 crops per image, cosine + min-max MSE, 0.1 x self-consistency,
# 0.1 x input consistency, AdamW 2e-4 / betas (0.9, 0.999) / weight decay 1e-5, no schedule,
# batch 4, 100k iterations, bf16 mixed precision (on GPU; float32 on CPU).
# Offline: replace pretrained=True by checkpoint='<local DINOv2 weights>'.
_base_ = ['./_base_/default_runtime.py', './_base_/imagenet_448.py']

model = dict(
    type='AnyUpDistillationModel',
    student=dict(type='AnyUp', window_ratio=0.1),
    teachers=dict(
        dinov2_s=dict(
            type='FrozenTimmEncoder',
            model_name='vit_small_patch14_dinov2.lvd142m',
            pretrained=True,
        ),
    ),
    multi_crop=dict(type='MultiCrop', input_size={{_base_.input_size}}, crop_size=224, num_crops=4),
    image_size={{_base_.image_size}},
    loss_weights=dict(crop=1.0, self_consistency=0.1, input_consistency=0.1),
    data_preprocessor=dict(type='AnyUpDataPreprocessor'),
)

optim_wrapper = dict(
    type='AmpOptimWrapper',
    dtype='bfloat16',
    optimizer=dict(type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=1e-5),
)
param_scheduler = None

train_cfg = dict(type='ResumableIterBasedTrainLoop', max_iters=100000, val_interval=5000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
