"""Feature-space preservation: a probe trained on low-resolution features, tested on AnyUp's.

Protocol: AnyUp (Wimmer et al., ICLR 2026, arXiv 2510.12764), Tab. 5. A linear probe is
trained on the original 32x32 DINOv2 ViT-S/14 features (no upsampling), then applied
unchanged to AnyUp's 448x448 features. An upsampler whose output stays in the encoder's
feature space keeps the probe working; one that drifts loses it. Everything else as
``ade20k_dinov2.py`` (ADE20K, 151 classes, 448 centre crops, AdamW 5e-4, 20 epochs).

How it is done here: the AnyUp neck passes the maps through unchanged in training mode
(``upsample_in_training=False``) and upsamples in eval mode, so every validation (each epoch,
and ``tools/test.py``) scores the low-resolution probe on AnyUp features. During training the
32x32 logits are resized bilinearly to the 448 label, as MMSeg's decode heads do; because the
probe is linear, this is the same as training it on bilinearly upsampled features, so the probe
never sees AnyUp output. The paper does not say how its low-resolution probe met the labels;
this is the choice and the reason.

Paper number (AnyUp Tab. 5, ADE20K, 448 px): AnyUp keeps 40.83 mIoU (LoftUp drops to 4.27).

Weights: see ``ade20k_dinov2.py``.
Run: ``python tools/train.py configs/mmseg/ade20k_dinov2_feature_preservation.py``.
"""

_base_ = ['./ade20k_dinov2.py']

model = dict(neck=dict(upsample_in_training=False))
