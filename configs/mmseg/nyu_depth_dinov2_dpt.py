"""NYUv2 depth, Probe3D's DPT probe on four DINOv2 ViT-S/14 layers upsampled by AnyUp.

Protocol: as ``nyu_depth_dinov2.py`` (Probe3D depth protocol at 224 px, bin-depth output,
same loss, data and schedule) with Probe3D's default probe instead of the linear one: its DPT
decoder (hidden width 512, 3x3 residual units) on blocks 2, 5, 8 and 11 (Probe3D's
``multilayers`` for a 12-block ViT). AnyUp upsamples the four maps to stride 4 (56x56 for
224 px input), guided by the image; the DPT fuses them there (no initial 2x), upsamples 4x to
224x224 for its output convolutions and skips its last 2x: ``upsample=(1, 4, 1)`` instead of
Probe3D's ``(2, 4, 2)`` on 16x16 tokens. Bilinear upsampling with ``align_corners=True``
inside the DPT (Probe3D since 2025-11-28; nearest before).

No paper number: AnyUp reports linear probes only (Tab. 3). The twin without AnyUp is
``nyu_depth_dinov2_dpt_bilinear.py``. Features as in the linear configs: patch tokens, each
layer after the final LayerNorm (Probe3D: raw block outputs with the CLS token concatenated).

Run: ``python tools/train.py configs/mmseg/nyu_depth_dinov2_dpt.py``.
"""

_base_ = ['./nyu_depth_dinov2.py']

dpt_layers = [2, 5, 8, 11]
model = dict(
    backbone=dict(layers=dpt_layers),
    neck=dict(in_index=[0, 1, 2, 3], output_stride=4),
    decode_head=dict(
        in_channels=[384, 384, 384, 384],
        in_index=[0, 1, 2, 3],
        probe='dpt',
        dpt_cfg=dict(channels=512, kernel_size=3, upsample=(1, 4, 1), align_corners=True),
    ),
)
