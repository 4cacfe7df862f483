# Depth probe on frozen DINOv2 ViT-S/14 (last block, after the final LayerNorm, patch tokens)
# upsampled to the input resolution by a frozen AnyUp: the segmentation probe's backbone and
# neck (inherited), with Probe3D's bin-depth head as a linear probe (one 1x1 conv to 256 bins
# in [0.001, 10] m, relu + 0.1, normalised, expected depth).
# Loss: 10 x scale-invariant log + 0.5 x multi-scale log-depth gradient (valid pixels only).
_base_ = ['./dinov2_vits14_anyup_probe.py']

data_preprocessor = dict(seg_pad_val=0)

model = dict(
    type='AnyUpDepthEstimator',
    # padded depth would be 0 = invalid (the crops are one size: no padding)
    data_preprocessor=data_preprocessor,
    decode_head=dict(
        _delete_=True,
        type='DepthProbeHead',
        in_channels=384,
        probe='linear',
        num_bins=256,
        min_depth=0.001,
        max_depth=10.0,
        align_corners=True,
        loss_decode=dict(type='ProbeDepthLoss', max_depth=10.0, si_weight=10.0, grad_weight=0.5),
    ),
)
