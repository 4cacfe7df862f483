"""A float64 model computes in float64 throughout: the way AnyUp's numerics are checked."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from anyup_plugin import AnyUp
from anyup_plugin.core.reference import reference_upsample

# (image size, feature (C, h, w), output size, window ratio): a window smaller than the map,
# a wide window with an output smaller than the features, and global attention.
CASES = [
    ((30, 26), (7, 4, 3), (17, 23), 0.1),
    ((28, 35), (5, 9, 11), (6, 8), 0.3),
    ((21, 14), (3, 3, 2), None, 0.0),
]


def _model(kernel: str, window_ratio: float, seed: int = 0) -> AnyUp:
    torch.manual_seed(seed)
    model = AnyUp(qk_dim=32, num_heads=4, window_ratio=window_ratio, attention_kernel=kernel)
    with torch.no_grad():
        # GroupNorm and RMS norm weights away from their (1, 0) initialisation, so that every
        # parameter takes part in the comparison.
        for name, param in model.named_parameters():
            if 'norm' in name or '.block.0.' in name or '.block.3.' in name:
                param.add_(0.3 * torch.randn_like(param))
    return model.double().eval()


def _inputs(case, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    (height, width), channels_hw, _, _ = case
    g = torch.Generator().manual_seed(1)
    image = torch.randn(batch, 3, height, width, generator=g, dtype=torch.float64)
    features = torch.randn(batch, *channels_hw, generator=g, dtype=torch.float64)
    return image, features


@pytest.mark.parametrize('kernel', ['matmul', 'sdpa'])
@pytest.mark.parametrize('grad', [False, True], ids=['inference', 'autograd'])
@pytest.mark.parametrize('case', CASES, ids=['window', 'wide-window-smaller', 'global'])
def test_float64_matches_the_dense_reference(case, grad, kernel):
    """Fused or module encoders, windowed tiles and either kernel against the dense masked
    formulation, to float64 rounding (float32 anywhere would leave ~1e-7)."""
    model = _model(kernel, case[3])
    image, features = _inputs(case)
    with torch.set_grad_enabled(grad):
        out = model(image, features, case[2])
    with torch.no_grad():
        expected = reference_upsample(model, image, features, case[2])
    assert out.dtype == torch.float64 and out.shape == expected.shape
    rel = ((out.detach() - expected).norm() / expected.norm()).item()
    assert rel <= 1e-10, f'relative error {rel:.2e}'
    worst = ((out.detach() - expected).abs().max() / expected.abs().max()).item()
    assert worst <= 1e-10, f'largest error {worst:.2e} of the largest value'


class _NarrowDtypes(TorchDispatchMode):
    """Records every operation that returns a floating-point tensor other than float64."""

    def __init__(self) -> None:
        super().__init__()
        self.found: set[tuple[str, torch.dtype]] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in tree_flatten(out)[0]:
            if (
                isinstance(value, torch.Tensor)
                and value.is_floating_point()
                and value.dtype != torch.float64
            ):
                self.found.add((str(func), value.dtype))
        return out


@pytest.mark.parametrize('kernel', ['matmul', 'sdpa'])
@pytest.mark.parametrize('grad', [False, True], ids=['inference', 'autograd'])
def test_float64_never_rounds_through_a_narrower_dtype(grad, kernel):
    """No operation of the forward (nor, with autograd, the backward) makes a float32 tensor:
    the reference shares the encoder modules, so only this shows that they stay in float64."""
    model = _model(kernel, 0.1)
    image, features = _inputs(CASES[0])
    features.requires_grad_(grad)
    mode = _NarrowDtypes()
    with torch.set_grad_enabled(grad), mode:
        out = model(image, features, (17, 23))
        if grad:
            out.square().sum().backward()
    assert mode.found == set()
    if grad:
        assert features.grad.dtype == torch.float64


def test_float32_and_float64_runs_are_one_model():
    """With the RMS norms' epsilon fixed (by default it is each dtype's machine epsilon), the
    float32 model is the float64 one to float32 rounding."""
    model = _model('matmul', 0.1)
    attn = model.cross_decode.cross_attn
    attn.norm_q.eps = attn.norm_k.eps = torch.finfo(torch.float32).eps
    image, features = _inputs(CASES[0])
    with torch.no_grad():
        out64 = model(image, features, (17, 23))
        out32 = model.float()(image.float(), features.float(), (17, 23))
    assert out32.dtype == torch.float32
    rel = ((out32.double() - out64).norm() / out64.norm()).item()
    assert 1e-9 < rel < 1e-5, f'relative difference {rel:.2e}'
