"""The reconstruction loss and the trainer's three loss terms against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip('mmengine', reason='the AnyUp trainer is built on MMEngine')

from anyup_plugin.core import AnyUp
from anyup_plugin.training import (
    AnyUpDistillationModel,
    MultiCrop,
    Teacher,
    crop_feature_windows,
    reconstruction_loss,
)


def _pixels(*vectors):
    """(1, C, 1, N) from N channel vectors."""
    return torch.tensor(vectors, dtype=torch.float32).T[None, :, None, :]


def test_reconstruction_loss_by_hand():
    # pixel 1: target (1, 0), pred (0, 1): cos 0; min-max with target range [0, 1]:
    #   target -> (1, 0), pred -> (0, 1), squared error (1, 1) -> 1.
    # pixel 2: target (3, 1), pred (2, 2): cos 8 / sqrt(80); target range [1, 3]:
    #   target -> (1, 0), pred -> (0.5, 0.5), squared error 0.25 -> 0.25.
    target = _pixels([1.0, 0.0], [3.0, 1.0])
    pred = _pixels([0.0, 1.0], [2.0, 2.0])
    terms = reconstruction_loss(pred, target)
    cos_loss = (1.0 + (1.0 - 8.0 / math.sqrt(80.0))) / 2
    assert terms.cosine.item() == pytest.approx(cos_loss, abs=1e-6)
    # eps = 1e-6 in the range: relative effect ~1e-6.
    assert terms.mse.item() == pytest.approx((1.0 + 0.25) / 2, rel=1e-5)
    assert terms.total.item() == pytest.approx(cos_loss + 0.625, rel=1e-5)


def test_reconstruction_loss_per_sample_and_zero_at_target():
    target = torch.randn(3, 5, 4, 4)
    same = reconstruction_loss(target.clone(), target, per_sample=True)
    assert same.total.shape == (3,)
    assert torch.allclose(same.total, torch.zeros(3), atol=1e-6)
    # Scaling the prediction keeps the cosine term at zero but not the min-max MSE.
    scaled = reconstruction_loss(2 * target, target)
    assert scaled.cosine.item() == pytest.approx(0.0, abs=1e-6)
    assert scaled.mse.item() > 0.1


def _hand_terms(pred, target):
    """Independent re-implementation with explicit formulas."""
    p = pred.permute(0, 2, 3, 1).reshape(-1, pred.shape[1]).double()
    t = target.permute(0, 2, 3, 1).reshape(-1, target.shape[1]).double()
    cos = (p * t).sum(1) / (p.norm(dim=1) * t.norm(dim=1))
    lo, hi = t.min(1, keepdim=True).values, t.max(1, keepdim=True).values
    mse = (((p - lo) / (hi - lo + 1e-6) - (t - lo) / (hi - lo + 1e-6)) ** 2).mean()
    return (1 - cos).mean() + mse


@pytest.fixture
def tiny_trainer(patch_encoder):
    torch.manual_seed(0)
    return AnyUpDistillationModel(
        student=AnyUp(qk_dim=32),
        teachers=Teacher(patch_encoder(patch_size=8, channels=12), name='patch8'),
        multi_crop=MultiCrop(input_size=32, crop_size=32, num_crops=2),
        image_size=64,
        loss_weights=dict(crop=1.0, self_consistency=0.1, input_consistency=0.1),
    )


def test_trainer_loss_terms_match_hand_computation(tiny_trainer):
    model = tiny_trainer
    images = torch.randn(2, 3, 64, 64)
    guidance_aug = torch.randn(2, 3, 32, 32)
    torch.manual_seed(123)
    losses = model(images, {'guidance_aug': guidance_aug}, mode='loss')

    # Replay the step by hand: same random crops (same seed), same student.
    torch.manual_seed(123)
    views = model.multi_crop(images, 8)
    teacher = model.teachers[0]
    low_res = teacher(views.guidance)  # (2, 12, 4, 4)
    targets = teacher(views.crops.flatten(0, 1))  # (4, 12, 4, 4)
    with torch.no_grad():
        pred = model.student(views.guidance, low_res, 8)
        expected_crop = _hand_terms(crop_feature_windows(pred, views.offsets, 4), targets)
        aug = model.student(guidance_aug, low_res, 32)
        clean = model.student(views.guidance, low_res, 32)
        expected_self = 0.1 * _hand_terms(aug, clean)
        # Area downsampling 8x8 -> 4x4 is a 2x2 average.
        expected_input = 0.1 * _hand_terms(F.avg_pool2d(pred, 2), low_res)

    assert losses['loss_crop'].item() == pytest.approx(expected_crop.item(), rel=1e-4, abs=1e-6)
    assert losses['loss_self_consistency'].item() == pytest.approx(
        expected_self.item(), rel=1e-4, abs=1e-7
    )
    assert losses['loss_input_consistency'].item() == pytest.approx(
        expected_input.item(), rel=1e-4, abs=1e-7
    )
    assert losses['crop_cos'].item() + losses['crop_mse'].item() == pytest.approx(
        losses['loss_crop'].item(), rel=1e-5
    )


def test_self_consistency_target_has_no_gradient(tiny_trainer):
    model = tiny_trainer
    model.loss_weights.update(crop=0.0, input_consistency=0.0)
    images = torch.randn(2, 3, 64, 64)
    guidance_aug = torch.randn(2, 3, 32, 32)
    params = [p for p in model.student.parameters() if p.requires_grad]

    torch.manual_seed(0)
    loss = model(images, {'guidance_aug': guidance_aug}, mode='loss')['loss_self_consistency']
    grads = torch.autograd.grad(loss, params, allow_unused=True)

    views = model.multi_crop(images, 8)
    low_res = model.teachers[0](views.guidance)
    aug = model.student(guidance_aug, low_res, 32)
    clean = model.student(views.guidance, low_res, 32)
    detached = torch.autograd.grad(
        0.1 * reconstruction_loss(aug, clean.detach()).total,
        params,
        allow_unused=True,
        retain_graph=True,
    )
    attached = torch.autograd.grad(
        0.1 * reconstruction_loss(aug, clean).total, params, allow_unused=True
    )
    flat = lambda gs: torch.cat([g.flatten() for g in gs if g is not None])  # noqa: E731
    assert torch.allclose(flat(grads), flat(detached), rtol=1e-4, atol=1e-8)
    assert not torch.allclose(flat(grads), flat(attached), rtol=1e-3, atol=1e-7)


def test_zero_weight_skips_term_and_weights_scale(tiny_trainer):
    model = tiny_trainer
    images = torch.randn(2, 3, 64, 64)
    model.loss_weights.update(self_consistency=0.0)
    torch.manual_seed(1)
    base = model(images, {}, mode='loss')  # no augmented guidance needed
    assert 'loss_self_consistency' not in base
    model.loss_weights.update(input_consistency=0.5, crop=2.0)
    torch.manual_seed(1)
    scaled = model(images, {}, mode='loss')
    assert scaled['loss_crop'].item() == pytest.approx(2 * base['loss_crop'].item(), rel=1e-5)
    assert scaled['loss_input_consistency'].item() == pytest.approx(
        5 * base['loss_input_consistency'].item(), rel=1e-5
    )


def test_unknown_loss_weight_is_refused(patch_encoder):
    with pytest.raises(ValueError, match='unknown loss weights'):
        AnyUpDistillationModel(
            student=AnyUp(qk_dim=32),
            teachers=Teacher(patch_encoder()),
            multi_crop=MultiCrop(32, 32, 1),
            loss_weights=dict(crops=1.0),
        )
