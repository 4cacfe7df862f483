"""Teachers: building, patch-size grouping, and the start-up check of the patch size."""

from __future__ import annotations

import warnings
from collections import Counter

import pytest
import torch

pytest.importorskip('mmengine', reason='the AnyUp trainer is built on MMEngine')

from anyup_plugin.core import AnyUp
from anyup_plugin.training import (
    AnyUpDistillationModel,
    MultiCrop,
    Teacher,
    TeacherPool,
    build_teachers,
)
from anyup_plugin.training.registry import build_model


def test_pool_groups_by_patch_size(patch_encoder):
    teachers = [
        Teacher(patch_encoder(14), name='a14'),
        Teacher(patch_encoder(14), name='b14'),
        Teacher(patch_encoder(14), name='c14'),
        Teacher(patch_encoder(16), name='d16'),
    ]
    pool = TeacherPool(teachers, 'patch_size')
    assert pool.groups == {14: [0, 1, 2], 16: [3]}
    gen = torch.Generator().manual_seed(0)
    counts = Counter(pool.sample(gen) for _ in range(4000))
    # Half of the steps use the only patch-16 teacher, the rest is split over the three others.
    assert counts[3] / 4000 == pytest.approx(0.5, abs=0.04)
    for i in range(3):
        assert counts[i] / 4000 == pytest.approx(1 / 6, abs=0.03)
    uniform = Counter(TeacherPool(teachers, 'uniform').sample(gen) for _ in range(4000))
    assert uniform[3] / 4000 == pytest.approx(0.25, abs=0.03)


def test_build_teachers_from_configs():
    teachers = build_teachers(
        dict(
            tiny=dict(
                type='FrozenTimmEncoder',
                model_name='vit_small_patch8_224',
                pretrained=False,
                patch_size=4,
                embed_dim=32,
                depth=1,
                num_heads=2,
                img_size=32,
            )
        )
    )
    (teacher,) = teachers
    assert teacher.name == 'tiny' and teacher.patch_size == 4
    assert not any(p.requires_grad for p in teacher.parameters())
    teacher.train()
    assert not teacher.training
    feats = teacher(torch.randn(2, 3, 32, 32))
    assert feats.shape == (2, 32, 8, 8)


def test_teacher_whose_patch_does_not_divide_the_crop_fails_at_start(patch_encoder):
    with pytest.raises(ValueError, match="teacher 'p16' has patch size 16.*crop size 56"):
        AnyUpDistillationModel(
            student=AnyUp(qk_dim=32),
            teachers=[Teacher(patch_encoder(8), name='p8'), Teacher(patch_encoder(16), name='p16')],
            multi_crop=MultiCrop(input_size=56, crop_size=56, num_crops=4),
            image_size=112,
        )


def test_teachers_are_not_trained_saved_or_optimised(patch_encoder):
    model = AnyUpDistillationModel(
        student=AnyUp(qk_dim=32),
        teachers=Teacher(patch_encoder(8), name='p8'),
        multi_crop=MultiCrop(32, 32, 2),
        image_size=64,
    )
    assert all(k.startswith('student.') for k in model.state_dict())
    teacher_params = {id(p) for p in model.teachers[0].parameters()}
    assert not teacher_params & {id(p) for p in model.parameters()}
    model.double()
    assert next(model.teachers[0].parameters()).dtype == torch.float64
    # Parameters that never enter the forward pass are frozen (DDP would wait for them).
    frozen = [n for n, p in model.student.named_parameters() if not p.requires_grad]
    assert frozen == [
        'cross_decode.cross_attn.attention.out_proj.weight',
        'cross_decode.cross_attn.attention.out_proj.bias',
    ]


def test_old_config_name_builds_the_distillation_model_and_warns_once(patch_encoder):
    cfg = dict(
        student=dict(type='AnyUp', qk_dim=32),
        teachers=Teacher(patch_encoder(8), name='p8'),
        multi_crop=dict(type='MultiCrop', input_size=32, crop_size=32, num_crops=2),
    )
    with pytest.warns(DeprecationWarning) as record:
        model = build_model(dict(type='AnyUpTrainer', **cfg))
    messages = [str(w.message) for w in record if w.category is DeprecationWarning]
    assert messages == [
        'AnyUpTrainer was renamed AnyUpDistillationModel; the old name is deprecated and will '
        'be removed: write AnyUpDistillationModel (same arguments)'
    ]
    assert isinstance(model, AnyUpDistillationModel)
    assert model.student.qk_dim == 32 and model.teachers[0].name == 'p8'
    with warnings.catch_warnings():
        warnings.simplefilter('error', DeprecationWarning)
        assert isinstance(
            build_model(dict(type='AnyUpDistillationModel', **cfg)), AnyUpDistillationModel
        )
