"""DPT on ViT-B/16 (ADE20K, 512x512) reading four ViT maps upsampled by AnyUp to stride 8.

MMSegmentation's ``dpt_vit-b16_8xb2-160k_ade20k-512x512.py`` (inherited from the installed
package): the ViT returns each of blocks 2, 5, 8 and 11 as ``[patch_map, cls_token]``, and
DPTHead reads the token back into every map (``readout_type='project'``). AnyUp upsamples
each stride-16 map to stride 8 guided by the image and passes the class tokens through, so
DPT's reassemble and fusion stages run at twice their usual resolution (its output at the
input size instead of half of it; about four times the decoder's activation memory). The
config has no neck, so the neck is added as written.

Not a paper protocol: no paper number. Needs ADE20K under ``data/ade/ADEChallengeData2016``
and the ViT weights at ``pretrain/vit-b16_p16_224-80ecf9dd.pth``, as MMSegmentation's config
says; AnyUp's published weights are downloaded once (offline, the error says where to put
the file). Run: ``python tools/train.py configs/mmseg/model_zoo/<this file>``.
"""

_base_ = 'mmseg::dpt/dpt_vit-b16_8xb2-160k_ade20k-512x512.py'
custom_imports = dict(imports=['anyup_plugin.mmseg'], allow_failed_imports=False)

model = dict(
    type='AnyUpEncoderDecoder',
    neck=dict(type='AnyUpNeck', checkpoint='anyup_multi_backbone', output_stride=8),
)
