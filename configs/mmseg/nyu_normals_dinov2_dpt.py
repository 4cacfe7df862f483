"""NYUv2 surface normals, Probe3D's DPT probe on four DINOv2 ViT-S/14 layers upsampled by AnyUp.

Protocol: as ``nyu_normals_dinov2.py`` (Probe3D normal protocol at 224 px, uncertainty-aware
angular loss, same data and schedule) with Probe3D's default probe: its DPT decoder (hidden
width 512, 3x3 residual units) on blocks 2, 5, 8 and 11. AnyUp upsamples the four maps to
stride 4 (56x56 for 224 px input); the DPT fuses them there, upsamples 4x for its output
convolutions and skips its last 2x (``upsample=(1, 4, 1)``, Probe3D: ``(2, 4, 2)`` on tokens),
bilinear with ``align_corners=True`` (Probe3D since 2025-11-28).

No paper number: AnyUp reports linear probes only (Tab. 3). Twin without AnyUp:
``nyu_normals_dinov2_dpt_bilinear.py``.

Run: ``python tools/train.py configs/mmseg/nyu_normals_dinov2_dpt.py``.
"""

_base_ = ['./nyu_normals_dinov2.py']

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
