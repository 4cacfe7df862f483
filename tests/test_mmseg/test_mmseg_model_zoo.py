"""AnyUp added to MMSegmentation's own model-zoo configs in the two lines a user writes.

Each family's config is the installed package's file (``mmseg::...``, read from
``mmseg/.mim/configs``, not a copy): a child config written here inherits it and sets the
segmentor type and the neck, as a user would. The model is then shrunk for the CPU (a few
narrow layers, 64x64 crops, BN for SyncBN, no pretrained weights, a small random AnyUp),
trains one step (finite losses, gradients in the decode head and, through AnyUp, in the
backbone) and predicts a full-size map. The three worked examples in
``configs/mmseg/model_zoo`` go through the same checks.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

pytest.importorskip('mmseg.models', reason='MMSegmentation (with mmcv ops) is not installed')

import mmseg
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

import anyup_plugin.mmseg  # noqa: F401  (registers the modules)

init_default_scope('mmseg')

MIM_CONFIGS = Path(mmseg.__file__).resolve().parent / '.mim' / 'configs'
EXAMPLES = Path(__file__).resolve().parents[2] / 'configs' / 'mmseg' / 'model_zoo'
SIZE = 64  # training crop
PREDICT_SIZE = (64, 80)  # non-square, to see the prediction keep the input's shape
NUM_CLASSES = 5


# --- shrinking the model-zoo models for a CPU -------------------------------------------------


def _vit(backbone, num_layers=4, out_indices=(0, 1, 2, 3)):
    backbone.update(img_size=(SIZE, SIZE), embed_dims=32, num_heads=2, num_layers=num_layers)
    if out_indices is not None:
        backbone.out_indices = out_indices


def _resnet(backbone):
    # BasicBlocks: stage widths 8, 16, 32, 64
    backbone.update(depth=18, stem_channels=16, base_channels=8)


def _shrink_upernet_vit(model):
    _vit(model.backbone)
    model.decode_head.update(in_channels=[32] * 4, channels=16)
    model.auxiliary_head.update(in_channels=32, channels=8)


def _shrink_dpt(model):
    _vit(model.backbone)
    model.decode_head.update(
        in_channels=(32,) * 4, channels=16, embed_dims=32, post_process_channels=[8, 16, 32, 32]
    )


def _shrink_segformer(model):
    model.backbone.update(embed_dims=8, num_heads=[1, 1, 2, 2], num_layers=[1, 1, 1, 1])
    model.decode_head.update(in_channels=[8, 8, 16, 16], channels=16)


def _shrink_swin(model):
    model.backbone.update(embed_dims=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2], window_size=4)
    model.decode_head.update(in_channels=[16, 32, 64, 128], channels=16)
    model.auxiliary_head.update(in_channels=64, channels=8)


def _shrink_deeplabv3(model):
    _resnet(model.backbone)
    model.decode_head.update(in_channels=64, channels=16)
    model.auxiliary_head.update(in_channels=32, channels=8)


def _shrink_deeplabv3plus(model):
    _shrink_deeplabv3(model)
    model.decode_head.update(c1_in_channels=8, c1_channels=8)


def _shrink_sem_fpn(model):
    _resnet(model.backbone)
    fpn = model.neck[-1]  # after AnyUpNeck in the list
    fpn.update(in_channels=[8, 16, 32, 64], out_channels=16)
    model.decode_head.update(in_channels=[16] * 4, channels=16)


def _shrink_segmenter(model):
    _vit(model.backbone, num_layers=2, out_indices=None)
    model.decode_head.update(in_channels=32, channels=32, embed_dims=32, num_heads=2, num_layers=1)


def _shrink(cfg: Config, family: Callable) -> Config:
    """No downloads, no process group, small model; ``family`` narrows its layers.

    AnyUp stays random and gets narrow attention (``qk_dim=32``: AnyUp's own arguments pass
    through the neck's config), which makes the file run in seconds instead of minutes.
    """
    model = cfg.model
    model.pretrained = None
    model.backbone.init_cfg = None
    model.data_preprocessor.size = (SIZE, SIZE)
    _replace_sync_bn(model)
    necks = model.neck if isinstance(model.neck, list) else [model.neck]
    for neck in necks:
        if neck.type == 'AnyUpNeck':
            neck.update(checkpoint=None, qk_dim=32, num_heads=2)
    for head in (model.decode_head, model.get('auxiliary_head')):
        if head is not None:
            head.num_classes = NUM_CLASSES
    family(model)
    return cfg


def _replace_sync_bn(node) -> None:
    """SyncBN needs a process group; BN computes the same on one process."""
    if isinstance(node, dict):
        if node.get('type') == 'SyncBN':
            node['type'] = 'BN'
        for value in node.values():
            _replace_sync_bn(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            _replace_sync_bn(value)


# --- the families -----------------------------------------------------------------------------

# (id, installed config, the neck line a user adds, shrink, strides of the decode head's inputs)
FAMILIES = [
    (
        'vit_upernet_mln',
        'vit/vit_vit-b16_mln_upernet_8xb2-80k_ade20k-512x512.py',
        "neck=dict(_delete_=True, type='AnyUpNeck', output_stride=[4, 8, 16, 32])",
        _shrink_upernet_vit,
        [4, 8, 16, 32],
    ),
    (
        'vit_cls_token_dpt',
        'dpt/dpt_vit-b16_8xb2-160k_ade20k-512x512.py',
        "neck=dict(type='AnyUpNeck', output_stride=8)",
        _shrink_dpt,
        [8, 8, 8, 8],
    ),
    (
        'mit_segformer',
        'segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py',
        "neck=dict(type='AnyUpNeck', in_index=[2, 3], output_stride=4)",
        _shrink_segformer,
        [4, 8, 4, 4],
    ),
    (
        'swin_upernet',
        'swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py',
        "neck=dict(type='AnyUpNeck', in_index=[2, 3], output_stride=[8, 16])",
        _shrink_swin,
        [4, 8, 8, 16],
    ),
    (
        'resnet_dilated_aspp',
        'deeplabv3/deeplabv3_r50-d8_4xb4-80k_ade20k-512x512.py',
        "neck=dict(type='AnyUpNeck', in_index=3, output_stride=4)",
        _shrink_deeplabv3,
        [4, 8, 8, 4],
    ),
    (
        'resnet_dilated_sep_aspp',
        'deeplabv3plus/deeplabv3plus_r50-d8_4xb4-80k_ade20k-512x512.py',
        "neck=dict(type='AnyUpNeck', in_index=3, output_stride=4)",
        _shrink_deeplabv3plus,
        [4, 8, 8, 4],
    ),
    (
        'resnet_fpn',
        'sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py',
        "neck=[dict(type='AnyUpNeck', in_index=[2, 3], output_stride=8), {{_base_.model.neck}}]",
        _shrink_sem_fpn,
        [4, 8, 8, 8],
    ),
    (
        'vit_segmenter',
        'segmenter/segmenter_vit-t_mask_8xb1-160k_ade20k-512x512.py',
        "neck=dict(type='AnyUpNeck', output_stride=8)",
        _shrink_segmenter,
        [8],
    ),
]

# The worked examples: file, shrink, strides of the decode head's inputs.
EXAMPLE_CONFIGS = [
    (
        'upernet_vit-b16_anyup-pyramid_8xb2-80k_ade20k-512x512.py',
        _shrink_upernet_vit,
        [4, 8, 16, 32],
    ),
    ('segformer_mit-b0_anyup_8xb2-160k_ade20k-512x512.py', _shrink_segformer, [4, 8, 4, 4]),
    ('dpt_vit-b16_anyup_8xb2-160k_ade20k-512x512.py', _shrink_dpt, [8, 8, 8, 8]),
]


def _user_config(tmp_path: Path, base: str, neck_line: str, segmentor='AnyUpEncoderDecoder'):
    """The config a user writes: the installed file as base, the segmentor type, the neck."""
    assert (MIM_CONFIGS / base).is_file(), f'{base} is not in the installed package'
    text = textwrap.dedent(
        f"""
        _base_ = 'mmseg::{base}'
        custom_imports = dict(imports=['anyup_plugin.mmseg'], allow_failed_imports=False)
        model = dict(type='{segmentor}', {neck_line})
        """
    )
    path = tmp_path / 'user_config.py'
    path.write_text(text)
    return Config.fromfile(str(path))


# --- one training step and a prediction -------------------------------------------------------


def _samples(height: int, width: int, batch: int) -> dict:
    gen = torch.Generator().manual_seed(0)
    inputs, samples = [], []
    for _ in range(batch):
        inputs.append(torch.randint(0, 256, (3, height, width), generator=gen, dtype=torch.uint8))
        sample = SegDataSample()
        labels = torch.randint(0, NUM_CLASSES, (1, height, width), generator=gen)
        sample.gt_sem_seg = PixelData(data=labels)
        shape = (height, width)
        sample.set_metainfo(dict(img_shape=shape, ori_shape=shape, pad_shape=shape))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def _level_strides(levels) -> list[int]:
    """Input pixels per cell of each level the neck gives the head (maps of pairs too)."""
    maps = [lvl[0] if isinstance(lvl, (list, tuple)) else lvl for lvl in levels]
    return [math.ceil(SIZE / m.shape[-2]) for m in maps]


def _trains_and_predicts(cfg: Config, strides: list[int]) -> None:
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()

    model.train()
    batch = model.data_preprocessor(_samples(SIZE, SIZE, batch=2), True)
    with torch.no_grad():
        assert _level_strides(model.extract_feat(batch['inputs'])) == strides
    losses = model(**batch, mode='loss')
    loss, log_vars = model.parse_losses(losses)
    assert 'decode.loss_ce' in log_vars
    assert all(torch.isfinite(v.detach()).all() for v in log_vars.values()), log_vars
    loss.backward()

    head = dict(model.decode_head.named_parameters())
    missing = [name for name, p in head.items() if p.requires_grad and p.grad is None]
    assert not missing, missing  # every trainable parameter of the head takes part
    assert all(torch.isfinite(p.grad).all() for p in head.values() if p.grad is not None)
    assert sum(float(p.grad.abs().sum()) for p in head.values() if p.grad is not None) > 0
    # through the (frozen) AnyUp neck down to the backbone
    backbone_grads = [p.grad for p in model.backbone.parameters() if p.grad is not None]
    assert backbone_grads and any(g.abs().sum() > 0 for g in backbone_grads)
    assert all(torch.isfinite(g).all() for g in backbone_grads)

    model.eval()
    with torch.no_grad():
        preds = model.test_step(_samples(*PREDICT_SIZE, batch=1))
    assert tuple(preds[0].pred_sem_seg.data.shape) == (1, *PREDICT_SIZE)
    assert tuple(preds[0].seg_logits.data.shape) == (NUM_CLASSES, *PREDICT_SIZE)


@pytest.mark.parametrize(
    'base,neck_line,shrink,strides',
    [f[1:] for f in FAMILIES],
    ids=[f[0] for f in FAMILIES],
)
def test_family_trains_and_predicts_with_anyup(tmp_path, base, neck_line, shrink, strides):
    cfg = _shrink(_user_config(tmp_path, base, neck_line), shrink)
    _trains_and_predicts(cfg, strides)


@pytest.mark.parametrize(
    'name,shrink,strides', EXAMPLE_CONFIGS, ids=[e[0].split('_')[0] for e in EXAMPLE_CONFIGS]
)
def test_example_config_trains_and_predicts(name, shrink, strides):
    cfg = Config.fromfile(str(EXAMPLES / name))
    assert cfg.model.type == 'AnyUpEncoderDecoder'
    assert cfg.model.neck.checkpoint == 'anyup_multi_backbone'
    _trains_and_predicts(_shrink(cfg, shrink), strides)


@pytest.mark.parametrize(
    'name,shrink,strides', EXAMPLE_CONFIGS, ids=[e[0].split('_')[0] for e in EXAMPLE_CONFIGS]
)
def test_example_config_trains_and_predicts_with_another_method(name, shrink, strides):
    cfg = Config.fromfile(str(EXAMPLES / name))
    cfg.merge_from_dict({'model.neck.method': 'guided_filter'})  # as --cfg-options does
    cfg = _shrink(cfg, shrink)
    for key in ('qk_dim', 'num_heads'):  # AnyUp's own, set by _shrink
        cfg.model.neck.pop(key)
    cfg.model.neck.checkpoint = 'anyup_multi_backbone'  # AnyUp's, ignored: no download
    _trains_and_predicts(cfg, strides)


def test_examples_are_thin_configs_on_the_installed_package():
    assert sorted(p.name for p in EXAMPLES.glob('*.py')) == sorted(e[0] for e in EXAMPLE_CONFIGS)
    for path in EXAMPLES.glob('*.py'):
        text = path.read_text()
        base = text.split("_base_ = 'mmseg::", 1)[1].split("'", 1)[0]
        resolved, scope = Config._get_cfg_path(f'mmseg::{base}', str(path))
        assert scope == 'mmseg' and Path(resolved).resolve() == (MIM_CONFIGS / base).resolve()
        assert 'python tools/train.py configs/mmseg/model_zoo/' in text
        assert "custom_imports = dict(imports=['anyup_plugin.mmseg']" in text


# --- what a user is told when a family cannot work as written ----------------------------------


def test_neck_merged_into_a_config_neck_says_what_to_write(tmp_path):
    # sem_fpn has an FPN neck: MMEngine merges the AnyUpNeck dict into it
    cfg = _user_config(
        tmp_path, FAMILIES[6][1], "neck=dict(type='AnyUpNeck', in_index=[2, 3], output_stride=8)"
    )
    assert cfg.model.neck.type == 'AnyUpNeck' and 'num_outs' in cfg.model.neck
    with pytest.raises(TypeError) as info:
        MODELS.build(cfg.model)
    message = str(info.value)
    assert 'in_channels, num_outs, out_channels' in message
    assert "neck=dict(_delete_=True, type='AnyUpNeck', ...)" in message
    assert "neck=[dict(type='AnyUpNeck', ...), {{_base_.model.neck}}]" in message
    # ViT's MultiLevelNeck likewise
    cfg = _user_config(tmp_path, FAMILIES[0][1], "neck=dict(type='AnyUpNeck', output_stride=8)")
    with pytest.raises(TypeError, match='in_channels, out_channels, scales'):
        MODELS.build(cfg.model)


@pytest.mark.parametrize('family', [1, 6], ids=['dpt_neck', 'fpn_neck_list'])
def test_stock_encoder_decoder_names_anyup_encoder_decoder(tmp_path, family):
    _, base, neck_line, shrink, _ = FAMILIES[family]
    cfg = _shrink(_user_config(tmp_path, base, neck_line, segmentor='EncoderDecoder'), shrink)
    model = MODELS.build(cfg.model)
    batch = model.data_preprocessor(_samples(SIZE, SIZE, batch=2), True)
    with pytest.raises(RuntimeError, match="type='AnyUpEncoderDecoder'"):
        model(**batch, mode='loss')


def test_neck_settings_that_do_not_fit_the_backbone_fail_at_the_first_forward(tmp_path):
    _, base, _, shrink, _ = FAMILIES[1]  # DPT: four [map, cls_token] levels
    neck_line = "neck=dict(type='AnyUpNeck', output_stride=[4, 8])"
    model = MODELS.build(_shrink(_user_config(tmp_path, base, neck_line), shrink).model)
    batch = model.data_preprocessor(_samples(SIZE, SIZE, batch=2), True)
    with pytest.raises(ValueError) as info:
        model(**batch, mode='loss')
    message = str(info.value)
    assert 'neck.output_stride=[4, 8] gives 2 strides for 4 selected map(s)' in message
    assert (
        'The backbone gave 4 map(s): ' + ', '.join(['(2, 32, 4, 4) + token (2, 32)'] * 4) in message
    )

    _, base, _, shrink, _ = FAMILIES[4]  # deeplabv3: ResNet maps at strides 4, 8, 8, 8
    neck_line = "neck=dict(type='AnyUpNeck', in_index=4, output_stride=4)"
    model = MODELS.build(_shrink(_user_config(tmp_path, base, neck_line), shrink).model)
    batch = model.data_preprocessor(_samples(SIZE, SIZE, batch=2), True)
    with pytest.raises(IndexError) as info:
        model(**batch, mode='loss')
    message = str(info.value)
    assert 'neck.in_index=4 selects map 4, which does not exist' in message
    shapes = '(2, 8, 16, 16), (2, 16, 8, 8), (2, 32, 8, 8), (2, 64, 8, 8)'
    assert f'The backbone gave 4 map(s): {shapes}' in message
