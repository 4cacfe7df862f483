# Surface-normal probe on frozen DINOv2 ViT-S/14 (last block, after the final LayerNorm, patch
# tokens) upsampled to the input resolution by a frozen AnyUp: the segmentation probe's
# backbone and neck (inherited), with one 1x1 conv to 4 channels, unit normal (3) and
# concentration kappa = elu + 1.01, resized bicubically (align corners), trained with the
# uncertainty-aware angular loss where the depth is valid.
_base_ = ['./dinov2_vits14_anyup_probe.py']

data_preprocessor = dict(seg_pad_val=0)

model = dict(
    type='AnyUpNormalEstimator',
    data_preprocessor=data_preprocessor,
    decode_head=dict(
        _delete_=True,
        type='NormalProbeHead',
        in_channels=384,
        probe='linear',
        uncertainty=True,
        max_depth=10.0,
        align_corners=True,
        loss_decode=dict(type='ProbeNormalLoss'),
    ),
)
