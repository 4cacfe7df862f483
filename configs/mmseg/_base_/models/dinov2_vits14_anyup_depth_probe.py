# Depth probe on frozen DINOv2 ViT-S/14 (last block, after the final LayerNorm, patch tokens)
# upsampled to the input resolution by a frozen AnyUp: Probe3D's bin-depth head as a linear
# probe (one 1x1 conv to 256 bins in [0.001, 10] m, relu + 0.1, normalised, expected depth).
# Loss: 10 x scale-invariant log + 0.5 x multi-scale log-depth gradient (valid pixels only).
norm_mean = [123.675, 116.28, 103.53]  # ImageNet, 0-255 scale, RGB
norm_std = [58.395, 57.12, 57.375]
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=norm_mean,
    std=norm_std,
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=0,  # padded depth would be 0 = invalid (the crops are one size: no padding)
    size_divisor=1,
)
model = dict(
    type='AnyUpDepthEstimator',
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
        type='DepthProbeHead',
        in_channels=384,
        probe='linear',
        num_bins=256,
        min_depth=0.001,
        max_depth=10.0,
        align_corners=True,
        loss_decode=dict(type='ProbeDepthLoss', max_depth=10.0, si_weight=10.0, grad_weight=0.5),
    ),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'),
)
