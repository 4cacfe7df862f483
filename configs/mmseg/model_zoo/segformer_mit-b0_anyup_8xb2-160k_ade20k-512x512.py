"""SegFormer MiT-B0 (ADE20K, 512x512) with its two coarsest maps refined by AnyUp.

MMSegmentation's ``segformer_mit-b0_8xb2-160k_ade20k-512x512.py`` (inherited from the
installed package): SegformerHead projects the four MiT maps (strides 4, 8, 16, 32) and
resizes them bilinearly to the stride-4 map before fusing. Here AnyUp brings the stride-16
and stride-32 maps to stride 4 guided by the image, so the head's bilinear resize leaves them
as they are; the other two maps reach the head unchanged. The config has no neck, so the
neck is added as written.

Not a paper protocol: no paper number. Needs ADE20K under ``data/ade/ADEChallengeData2016``;
the MiT weights and AnyUp's published weights are downloaded once (offline, the error says
where to put AnyUp's file). Run: ``python tools/train.py configs/mmseg/model_zoo/<this file>``.
"""

_base_ = 'mmseg::segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py'
custom_imports = dict(imports=['anyup_plugin.mmseg'], allow_failed_imports=False)

model = dict(
    type='AnyUpEncoderDecoder',
    neck=dict(
        type='AnyUpNeck', checkpoint='anyup_multi_backbone', in_index=[2, 3], output_stride=4
    ),
)
