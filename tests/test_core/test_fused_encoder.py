"""The fused encoder path: equal to the modules on every structure it accepts, and it accepts
only the structure it implements (anything else runs the modules)."""

from __future__ import annotations

import logging
import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from anyup_plugin import AnyUp
from anyup_plugin.core.fused_encoder import fused_encoder_forward, unfusable_reason
from anyup_plugin.core.layers import Encoder, ResBlock, RotaryPositionEmbedding2d
from anyup_plugin.core.reference import reference_upsample


def _randomise(module: nn.Module, generator: torch.Generator) -> None:
    """Random weights everywhere, GroupNorm affine parameters far from their (1, 0) init."""
    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, nn.Conv2d):
                fan_in = sub.weight[0].numel()
                sub.weight.copy_(torch.randn(sub.weight.shape, generator=generator) / fan_in**0.5)
                if sub.bias is not None:
                    sub.bias.copy_(torch.randn(sub.bias.shape, generator=generator))
            elif isinstance(sub, nn.GroupNorm) and sub.affine:
                sub.weight.copy_(1 + 0.5 * torch.randn(sub.weight.shape, generator=generator))
                sub.bias.copy_(0.5 * torch.randn(sub.bias.shape, generator=generator))
            elif isinstance(sub, RotaryPositionEmbedding2d):
                sub.freqs.copy_(3 * torch.randn(sub.freqs.shape, generator=generator))


def _random_architecture(seed: int) -> tuple[nn.Module, ...]:
    """Image, query and key encoders and a rope of random width, depth and norms."""
    rng = random.Random(seed)
    groups = rng.choice([1, 2, 4, 8])
    dim = 4 * groups * rng.randint(1, 3)  # divisible by 4 (rope) and by the groups

    def encoder(in_channels: int) -> Encoder:
        enc = Encoder(nn.Conv2d(in_channels, dim, 1, bias=False), dim, groups, rng.randint(1, 3))
        for block in enc.blocks:
            for i in (0, 3):
                # Any epsilon, and norms without affine parameters: the fused path reads both.
                block.block[i] = nn.GroupNorm(
                    groups, dim, eps=10 ** rng.uniform(-8, -1), affine=rng.random() < 0.7
                )
        return enc

    modules = (encoder(3), encoder(dim), encoder(dim), RotaryPositionEmbedding2d(dim))
    generator = torch.Generator().manual_seed(seed)
    for module in modules:
        _randomise(module, generator)
    return tuple(m.double() for m in modules)


def _module_path(image, image_encoder, query_encoder, key_encoder, rope, query_sizes, key_sizes):
    enc = rope(image_encoder(image))
    queries, keys = query_encoder(enc), key_encoder(enc)
    return (
        [F.adaptive_avg_pool2d(queries, s) for s in query_sizes],
        [F.adaptive_avg_pool2d(keys, s) for s in key_sizes],
    )


@pytest.mark.parametrize('seed', range(8))
def test_fused_path_matches_the_modules_on_random_architectures(seed):
    """Random width, groups, depth, GroupNorm epsilon and affine-ness, weights, sizes and chunks;
    float64, so that only a different computation could explain a difference."""
    modules = _random_architecture(seed)
    assert unfusable_reason(*modules) is None
    rng = random.Random(100 + seed)
    batch, height, width = rng.randint(1, 2), rng.randint(5, 19), rng.randint(5, 19)
    image = torch.randn(batch, 3, height, width, dtype=torch.float64)
    query_sizes = [(height, width), (rng.randint(1, height), rng.randint(1, width))]
    query_sizes.append((height + rng.randint(1, 9), width + rng.randint(1, 9)))
    key_sizes = [(rng.randint(1, 6), rng.randint(1, 6)), (height, width)]
    with torch.no_grad():
        fused = fused_encoder_forward(
            image, *modules, query_sizes, key_sizes, chunk_tokens=rng.randint(1, 3) * width + 1
        )
        expected = _module_path(image, *modules, query_sizes, key_sizes)
    for got, want in zip(fused[0] + fused[1], expected[0] + expected[1]):
        assert got.dtype == torch.float64
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def _encoders(model: AnyUp) -> tuple[nn.Module, ...]:
    return model.image_encoder, model.query_encoder, model.key_encoder, model.rope


def test_the_published_structure_is_fused():
    """AnyUp's own encoders take the fused path (else inference silently loses its speed)."""
    assert unfusable_reason(*_encoders(AnyUp())) is None
    assert unfusable_reason(*_encoders(AnyUp(qk_dim=48, num_heads=3, num_groups=4))) is None


class _ScaledResBlock(ResBlock):
    """A residual block whose branch is halved: same layers, another forward."""

    def forward(self, x):
        return x + 0.5 * self.block(x)


class _ShiftedRope(RotaryPositionEmbedding2d):
    def forward(self, x):
        return super().forward(x) + 1.0


def _replace_block(model: AnyUp, encoder: str, index: int, block: ResBlock) -> None:
    old = getattr(model, encoder)[index]
    block.load_state_dict(old.state_dict())
    getattr(model, encoder)[index] = block


def _alter(model: AnyUp, alteration: str) -> str:
    """Changes one thing the fused path does not implement; returns the name the reason gives."""
    d = model.qk_dim
    if alteration == 'conv bias':
        model.image_encoder[1].block[2] = nn.Conv2d(d, d, 1, bias=True)
        return 'image_encoder.1.block.2 has a bias'
    if alteration == 'first layer bias':
        model.key_encoder[0] = nn.Conv2d(d, d, 1, bias=True)
        return 'key_encoder.0 has a bias'
    if alteration == 'first layer 3x3':
        model.query_encoder[0] = nn.Conv2d(d, d, 3, padding=1, bias=False)
        return 'query_encoder.0 has kernel size (3, 3)'
    if alteration == 'grouped conv':
        model.query_encoder[2].block[5] = nn.Conv2d(d, d, 1, groups=2, bias=False)
        return 'query_encoder.2.block.5 has 2 groups'
    if alteration == 'ReLU':
        model.key_encoder[1].block[4] = nn.ReLU()
        return 'key_encoder.1.block is GroupNorm -> SiLU -> Conv2d -> GroupNorm -> ReLU -> Conv2d'
    if alteration == 'GELU':
        model.image_encoder[2].block[1] = nn.GELU()
        return 'image_encoder.2.block is GroupNorm -> GELU'
    if alteration == 'instance norm':
        model.query_encoder[1].block[3] = nn.InstanceNorm2d(d, affine=True)
        return 'query_encoder.1.block is GroupNorm -> SiLU -> Conv2d -> InstanceNorm2d'
    if alteration == 'extra layer':
        model.key_encoder[2].block.append(nn.Conv2d(d, d, 1, bias=False))
        return 'key_encoder.2.block is'
    if alteration == 'ResBlock subclass':
        _replace_block(model, 'image_encoder', 1, _ScaledResBlock(d))
        return 'image_encoder.1 is a _ScaledResBlock, not a ResBlock'
    if alteration == 'rope subclass':
        rope = _ShiftedRope(d)
        rope.load_state_dict(model.rope.state_dict())
        model.rope = rope
        return 'rope is a _ShiftedRope'
    if alteration == 'forward hook':
        model.query_encoder[1].block[2].register_forward_hook(lambda mod, args, out: 2 * out)
        return 'query_encoder.1.block.2 has forward hooks'
    raise AssertionError(alteration)


ALTERATIONS = [
    'conv bias',
    'first layer bias',
    'first layer 3x3',
    'grouped conv',
    'ReLU',
    'GELU',
    'instance norm',
    'extra layer',
    'ResBlock subclass',
    'rope subclass',
    'forward hook',
]


@pytest.mark.parametrize('alteration', ALTERATIONS)
def test_an_altered_structure_is_detected_and_runs_the_modules(alteration, monkeypatch):
    """The reason names the module; the fused path refuses it; AnyUp's inference then computes
    what the modules define (equal to its autograd path and to the dense reference). Without
    the check, the fused path would have computed something else (or failed)."""
    torch.manual_seed(0)
    model = AnyUp(qk_dim=16, num_heads=2)
    expected_reason = _alter(model, alteration)
    _randomise(model, torch.Generator().manual_seed(1))
    model = model.double().eval()
    reason = unfusable_reason(*_encoders(model))
    assert reason is not None and reason.startswith(expected_reason), reason

    image = torch.randn(1, 3, 12, 10, dtype=torch.float64)
    features = torch.randn(1, 5, 3, 2, dtype=torch.float64)
    with torch.no_grad(), pytest.raises(TypeError, match='fused encoder path does not apply'):
        fused_encoder_forward(image, *_encoders(model), [(12, 10)], [(3, 2)])
    with torch.no_grad():
        inference = model(image, features)
        reference = reference_upsample(model, image, features)
    with torch.enable_grad():
        autograd = model(image, features).detach()
    torch.testing.assert_close(inference, autograd, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(inference, reference, rtol=1e-10, atol=1e-12)

    # The same call with the check switched off: the alteration matters to the fused path.
    for module in ('anyup_plugin.core.anyup', 'anyup_plugin.core.fused_encoder'):
        monkeypatch.setattr(f'{module}.unfusable_reason', lambda *modules: None)
    try:
        with torch.no_grad():
            unchecked = model(image, features)
    except (RuntimeError, AttributeError):
        # A 3x3 kernel's weights do not fit the fused 1x1 products; an InstanceNorm has no
        # groups to read.
        return
    assert (unchecked - inference).abs().max() > 1e-6


def test_the_fallback_is_announced_once_per_reason(caplog):
    model = AnyUp(qk_dim=16, num_heads=2).eval()
    model.image_encoder[1].block[1] = nn.Tanh()  # a reason no other test gives
    image, features = torch.randn(1, 3, 8, 8), torch.randn(1, 4, 2, 2)
    with caplog.at_level(logging.WARNING, logger='anyup_plugin.core.anyup'), torch.no_grad():
        model(image, features)
        model(image, features)
    messages = [r.getMessage() for r in caplog.records if 'Tanh' in r.getMessage()]
    assert len(messages) == 1
    assert (
        'fused encoder path does not apply (image_encoder.1.block is GroupNorm -> Tanh'
        in (messages[0])
    )


@pytest.mark.parametrize(
    'norm',
    [nn.GroupNorm(8, 16, eps=0.05), nn.GroupNorm(2, 16), nn.GroupNorm(4, 16, affine=False)],
    ids=['eps', 'groups', 'no-affine'],
)
def test_what_the_fused_path_reads_from_a_group_norm_is_followed(norm):
    """A GroupNorm with another epsilon, group count or no affine parameters is still fused,
    and inference still computes what the modules define."""
    torch.manual_seed(0)
    model = AnyUp(qk_dim=16, num_heads=2)
    model.key_encoder[2].block[3] = norm
    _randomise(model, torch.Generator().manual_seed(1))
    model = model.double().eval()
    assert unfusable_reason(*_encoders(model)) is None
    image = torch.randn(1, 3, 12, 10, dtype=torch.float64)
    features = torch.randn(1, 5, 3, 2, dtype=torch.float64)
    with torch.no_grad():
        inference = model(image, features)
        reference = reference_upsample(model, image, features)
    torch.testing.assert_close(inference, reference, rtol=1e-10, atol=1e-12)
