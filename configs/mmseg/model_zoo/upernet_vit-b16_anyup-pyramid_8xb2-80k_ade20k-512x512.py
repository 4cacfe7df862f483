"""UPerNet on ViT-B/16 (ADE20K, 512x512), its feature pyramid made by AnyUp from one map.

MMSegmentation's ``vit_vit-b16_mln_upernet_8xb2-80k_ade20k-512x512.py`` (inherited from the
installed package) builds UPerHead's four-level pyramid with ``MultiLevelNeck``: four ViT
blocks' stride-16 maps, each resized by a deconvolution, identity or pooling to strides 4, 8,
16 and 32. Here AnyUp makes all four levels from the last block's stride-16 map alone, guided
by the image (stride 32 too: AnyUp can also output fewer cells than it is given). Everything
else (backbone, heads, data, schedule) is MMSegmentation's config. The neck replaces the
base's ``MultiLevelNeck`` (``_delete_=True``: otherwise MMEngine would merge the two dicts).

Not a paper protocol: no paper number. Needs ADE20K under ``data/ade/ADEChallengeData2016``
and the ViT weights at ``pretrain/vit_base_patch16_224.pth``, as MMSegmentation's config
says; AnyUp's published weights are downloaded once (offline, the error says where to put
the file). Run: ``python tools/train.py configs/mmseg/model_zoo/<this file>``.
"""

_base_ = 'mmseg::vit/vit_vit-b16_mln_upernet_8xb2-80k_ade20k-512x512.py'
custom_imports = dict(imports=['anyup_plugin.mmseg'], allow_failed_imports=False)

model = dict(
    type='AnyUpEncoderDecoder',
    neck=dict(
        _delete_=True,
        type='AnyUpNeck',
        checkpoint='anyup_multi_backbone',
        in_index=-1,
        output_stride=[4, 8, 16, 32],
    ),
)
