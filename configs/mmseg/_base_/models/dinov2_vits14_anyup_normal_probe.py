# Surface-normal probe on frozen DINOv2 ViT-S/14 (last block, after the final LayerNorm, patch
# tokens) upsampled to the input resolution by a frozen AnyUp: one 1x1 conv to 4 channels,
# unit normal (3) and concentration kappa = elu + 1.01, resized bicubically (align corners),
# trained with the uncertainty-aware angular loss where the depth is valid.
norm_mean = [123.675, 116.28, 103.53]  # ImageNet, 0-255 scale, RGB
norm_std = [58.395, 57.12, 57.375]
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=norm_mean,
    std=norm_std,
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=0,
    size_divisor=1,
)
model = dict(
    type='AnyUpNormalEstimator',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='FrozenTimmBackbone',
        model_name='vit_small_patch14_dinov2.lvd142m',
        layers=-1,
        apply_norm=True,
        pretrained=False,
        checkpoint=None,
    ),
    neck=dict(type='AnyUpNeck', checkpoint=None, frozen=True, window_ratio=0.1, output_stride=1),
    decode_head=dict(
        type='NormalProbeHead',
        in_channels=384,
        probe='linear',
        uncertainty=True,
        max_depth=10.0,
        align_corners=True,
        loss_decode=dict(type='ProbeNormalLoss'),
    ),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'),
)
