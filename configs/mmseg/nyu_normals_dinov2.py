"""NYUv2 surface normals, linear probe on DINOv2 ViT-S/14 features upsampled by AnyUp.

Protocol: Probe3D's surface-normal probe (El Banani et al., CVPR 2024) at AnyUp's 224 px, as
in AnyUp (Wimmer et al., ICLR 2026, Tab. 3): frozen DINOv2 ViT-S/14 (last block after the
final LayerNorm, 16x16 patch tokens), frozen AnyUp (``anyup_paper``) upsampling 14x to
224x224, a linear probe (1x1 conv) to 4 channels (normal and kappa = elu + 1.01), resized
bicubically (align corners), uncertainty-aware angular loss where the depth is valid, AdamW
5e-4 / wd 0.01, batch 8, 10 epochs, warm-up 1.5 epochs then cosine to 0.01x (per
iteration). Data: centre 480x480 resized to 224 (normals renormalised), Probe3D's random
resized crop and colour jitter in training; scored on the 654 labelled test images
(Ladicky et al.'s normals) where the depth is valid, per image then averaged.

Paper number (AnyUp Tab. 3, DINOv2 ViT-S/14, "AnyUp" row): angular RMSE 31.17 degrees
(shares within 11.25 / 22.5 / 30 degrees not reported for AnyUp). Bilinear baseline
(``nyu_normals_dinov2_bilinear.py``): RMSE 32.70, 0.26 / 0.53 / 0.66.

Choices where the sources disagree:

- Head: AnyUp calls its probe linear: a 1x1 conv on the upsampled features, with Probe3D's
  uncertainty channel (its default head, ``uncertainty_aware=True``); Probe3D's default probe
  is its DPT (``nyu_normals_dinov2_dpt.py``).
- Features: patch tokens after the final LayerNorm (Probe3D: "dense-cls", CLS token
  concatenated, no final norm).
- Training set: GeoNet's frames (``splits/geonet_trainval.txt``, Probe3D's code, Bansal et
  al.'s normals); ``splits/train.txt`` holds the 795 labelled images (Ladicky's normals).
- Resizing: bicubic with ``align_corners=True`` (Probe3D since 2025-11-28; AnyUp's paper
  predates it); at 224x224 predictions the resize is the identity.
- Normals resized to 224 with antialiased bilinear filtering and renormalised (Probe3D keeps
  480 px and uses nearest neighbour in its crop augmentation).
- Schedule: MMEngine's half-period cosine instead of Probe3D's quarter period.
- Metrics: an image without valid pixels is left out and counted (Probe3D scores it 0).

Data: ``python tools/convert_nyuv2.py labeled ...`` and ``... geonet ...``.
Run: ``python tools/train.py configs/mmseg/nyu_normals_dinov2.py`` (or MMSeg's tools/train.py).
"""

_base_ = [
    './_base_/models/dinov2_vits14_anyup_normal_probe.py',
    './_base_/datasets/nyu_normals_probe3d.py',
    './_base_/schedules/probe3d_10e.py',
    './_base_/default_runtime.py',
]

backbone_checkpoint = 'checkpoints/vit_small_patch14_dinov2.lvd142m.safetensors'
anyup_checkpoint = 'anyup_paper'

model = dict(backbone=dict(checkpoint=backbone_checkpoint), neck=dict(checkpoint=anyup_checkpoint))
# Keep the last epoch's checkpoint; no "best" one (it would be selected on the test split).
default_hooks = dict(checkpoint=dict(save_best=None), logger=dict(interval=50))
