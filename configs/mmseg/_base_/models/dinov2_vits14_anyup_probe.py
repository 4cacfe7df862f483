# Linear probe on frozen DINOv2 ViT-S/14 (last block, after the final LayerNorm, patch tokens)
# upsampled to the input resolution by a frozen AnyUp. The thin configs set the weights
# (model.backbone.checkpoint, model.neck.checkpoint) and the number of classes.
norm_mean = [123.675, 116.28, 103.53]  # ImageNet, 0-255 scale, RGB
norm_std = [58.395, 57.12, 57.375]
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=norm_mean,
    std=norm_std,
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    # The crops all have one size: batching needs no padding (MMSeg wants size or divisor).
    size_divisor=1,
)
model = dict(
    type='AnyUpEncoderDecoder',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='FrozenTimmMMSegBackbone',
        model_name='vit_small_patch14_dinov2.lvd142m',
        layers=-1,
        apply_norm=True,
        pretrained=False,
        checkpoint=None,
    ),
    neck=dict(type='AnyUpNeck', checkpoint=None, frozen=True, window_ratio=0.1, output_stride=1),
    decode_head=dict(
        type='LinearProbeHead',
        in_channels=384,
        num_classes=151,
        ignore_index=255,
        align_corners=False,
    ),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'),
)
