"""NYUv2 depth, linear probe on DINOv2 ViT-S/14 features upsampled by AnyUp (paper setting).

Protocol: Probe3D's depth probe (El Banani et al., CVPR 2024) at AnyUp's 224 px, as in AnyUp
(Wimmer et al., ICLR 2026, Tab. 3): frozen DINOv2 ViT-S/14 (timm
``vit_small_patch14_dinov2.lvd142m``, last block after the final LayerNorm, 16x16 patch
tokens), frozen AnyUp (published ``anyup_paper`` weights) upsampling 14x to 224x224 guided by
the image, a linear probe (1x1 conv) to 256 depth bins in [0.001, 10] m (relu + 0.1,
normalised, expected depth), loss 10 x SI-log + 0.5 x log-depth gradient, AdamW 5e-4 / wd
0.01, batch 8, 10 epochs, linear warm-up over 1.5 epochs then cosine to 0.01x (per iteration).
Data: centre 480x480 of the 480x640 frames resized to 224, depth > 10 m invalid; random
resized crop (scale 0.5-1, ratio 1, p 0.5) and colour jitter (0.2 x4, p 0.8) in training;
scored on the 654 labelled test images, per image then averaged.

Paper number (AnyUp Tab. 3, DINOv2 ViT-S/14, "AnyUp" row): RMSE 0.4755, delta1 0.8216
(relative metrics not reported for AnyUp). Bilinear baseline (``nyu_depth_dinov2_bilinear.py``):
RMSE 0.4925, delta1 0.8081, rel. RMSE 0.3582, rel. delta1 0.9112.

Choices where the sources disagree:

- Head: AnyUp calls its depth probe linear, so this is Probe3D's bin-depth head with its
  ``Linear`` probe (a 1x1 conv) on the upsampled features; Probe3D's default is its DPT probe
  (``nyu_depth_dinov2_dpt.py``).
- Features: patch tokens after the final LayerNorm (AnyUp's probes); Probe3D concatenates the
  CLS token to every patch token ("dense-cls", 768 channels for ViT-S) without the final norm.
- Training set: Probe3D's code trains on GeoNet's NYU frames (``splits/geonet_trainval.txt``,
  ~30 k frames with Bansal et al.'s normals); AnyUp does not say more than "Probe3D". Train on
  the 795 labelled images with ``--cfg-options train_dataloader.dataset.ann_file=splits/train.txt``.
- Loss: the gradient loss as fixed by Probe3D on 2025-11-14 (commit ac00369: the multi-scale
  subsampling acts on the image axes; before, it indexed the batch). AnyUp's paper (October
  2025) predates the fix; the buggy variant compares images of a batch and is not reproduced.
- Resizing: ``align_corners=True`` (Probe3D since 2025-11-28); the linear probe's predictions
  are already at 224x224, so the resize is the identity and the change does not matter here.
- Augmentation: Probe3D crops at 480 px with nearest-neighbour interpolation for all maps;
  here the crop is resized straight to 224 (image antialiased bilinear, depth nearest). Its
  NYU loader leaves rotation and flipping off (``rotateflip=False``), as here.
- Schedule: MMEngine's cosine (half period) instead of Probe3D's quarter-period cosine.
- Metrics: an image without valid depth is left out and counted (Probe3D scores it 0).

Weights (nothing is downloaded at build time unless named): the backbone's timm
``model.safetensors`` saved as ``backbone_checkpoint``; AnyUp ``'anyup_paper'`` (downloaded
into torch's hub cache when online) or a local path.

Data: ``python tools/convert_nyuv2.py labeled ...`` and ``... geonet ...`` (see that tool).
Run: ``python tools/train.py configs/mmseg/nyu_depth_dinov2.py`` (or MMSeg's tools/train.py).
"""

_base_ = [
    './_base_/models/dinov2_vits14_anyup_depth_probe.py',
    './_base_/datasets/nyu_depth_probe3d.py',
    './_base_/schedules/probe3d_10e.py',
    './_base_/default_runtime.py',
]

backbone_checkpoint = 'checkpoints/vit_small_patch14_dinov2.lvd142m.safetensors'
anyup_checkpoint = 'anyup_paper'

model = dict(backbone=dict(checkpoint=backbone_checkpoint), neck=dict(checkpoint=anyup_checkpoint))
# Keep the last epoch's checkpoint; no "best" one (it would be selected on the test split).
default_hooks = dict(checkpoint=dict(save_best=None), logger=dict(interval=50))
