# The published multi-encoder recipe (`anyup_multi_backbone.pth`): the single-encoder recipe
# with five frozen teachers. Each step draws a patch size (14 or 16) uniformly, then a teacher
# with that patch size uniformly. Validation scores every teacher.
# Offline: replace pretrained=True by checkpoint='<local weights>' for each teacher.
_base_ = ['./anyup_dinov2_vits14_in1k_100k.py']

model = dict(
    teachers=dict(
        _delete_=True,
        dinov2_s=dict(
            type='FrozenTimmEncoder',
            model_name='vit_small_patch14_dinov2.lvd142m',
            pretrained=True,
        ),
        dinov2_s_reg=dict(
            type='FrozenTimmEncoder',
            model_name='vit_small_patch14_reg4_dinov2.lvd142m',
            pretrained=True,
        ),
        clip_b=dict(
            type='FrozenTimmEncoder', model_name='vit_base_patch16_clip_384', pretrained=True
        ),
        siglip2_b=dict(
            type='FrozenTimmEncoder',
            model_name='vit_base_patch16_siglip_512.v2_webli',
            pretrained=True,
        ),
        vit_b=dict(type='FrozenTimmEncoder', model_name='vit_base_patch16_224', pretrained=True),
    ),
    teacher_sampling='patch_size',
)
