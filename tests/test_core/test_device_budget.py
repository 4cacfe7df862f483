"""Sizing per device outside the attention, the checks without host syncs, IEEE float32 on CUDA.

The CUDA sizing is exercised on CPU tensors with ``forced_device_profile('accelerator')``:
the operations it dispatches are those of a CUDA forward (kernels launched, each with its
Python and dispatcher overhead), counted here per stage. The tests whose names hold ``cuda``
need a GPU and run from ``tools/benchmark_gpu.sh``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from anyup_plugin import AnyUp
from anyup_plugin.core import checks, device_budget, fused_encoder
from anyup_plugin.core.checks import available_memory_bytes, check_all_finite, check_result_fits
from anyup_plugin.core.device_budget import (
    ACCELERATOR_PROFILE,
    CPU_PROFILE,
    device_profile,
    forced_device_profile,
)
from anyup_plugin.core.ieee_float32 import ieee_float32
from anyup_plugin.core.kernel_count import OpCounter
from anyup_plugin.core.layers import LFU_CHUNK_ELEMENTS, LFU_PATCH_ELEMENTS

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')

#: An H100/H200-sized device's available memory, so that the budgets do not depend on the
#: machine running the test.
_GPU_BYTES = 80 * 2**30


def _stage_counts(size: int, feature_size: int, channels: int = 384) -> dict:
    """Operations dispatched, (all, kernel-launching), by the encoders and the unification.

    The encoders run on the meta device (shapes only, the same operations, no arithmetic);
    the unification, which autocast does not allow on meta, on the CPU.
    """
    torch.manual_seed(0)
    model = AnyUp().eval()
    meta = AnyUp().eval().to('meta')
    image = torch.empty(1, 3, size, size, device='meta')
    features = torch.randn(1, channels, feature_size, feature_size)
    counts = {}
    with torch.no_grad():
        with OpCounter() as ops:
            meta.encode_guidance(image, [(size, size)], [(feature_size, feature_size)])
        counts['encoders'] = (ops.total, ops.kernels)
        with OpCounter() as ops:
            model.unify_features(features)
        counts['feature unification'] = (ops.total, ops.kernels)
    return counts


def test_cpu_profile_keeps_the_cache_sized_chunks():
    # The CPU path was tuned with these; the golden tests check its results.
    assert device_profile(torch.device('cpu')) is CPU_PROFILE
    assert (LFU_CHUNK_ELEMENTS, LFU_PATCH_ELEMENTS) == (2**18, 2**22)
    assert CPU_PROFILE.encoder_chunk_tokens == 4096
    assert not CPU_PROFILE.encoder_modules_when_they_fit
    assert device_profile(torch.device('cuda')) is ACCELERATOR_PROFILE
    with forced_device_profile('accelerator'):
        assert device_profile(torch.device('cpu')) is ACCELERATOR_PROFILE
    assert device_profile(torch.device('cpu')) is CPU_PROFILE
    with pytest.raises(ValueError, match='kind must be one of'):
        with forced_device_profile('gpu'):
            pass


def test_accelerator_budget_counts_a_quarter_of_the_available_memory(monkeypatch):
    monkeypatch.setattr(device_budget, 'available_memory_bytes', lambda device: 2**30)
    assert ACCELERATOR_PROFILE.chunk_elements(None, torch.device('cuda'), 4) == 2**30 // 16
    assert ACCELERATOR_PROFILE.chunk_elements(7, torch.device('cuda'), 4) == 7
    # 8 maps of 128 x 448 x 448 float32 (822 MB) fit in half of 2 GiB, not in half of 1 GiB.
    elements = 128 * 448 * 448
    assert not ACCELERATOR_PROFILE.encoder_modules_fit(torch.device('cuda'), elements, 4)
    monkeypatch.setattr(device_budget, 'available_memory_bytes', lambda device: 2**31)
    assert ACCELERATOR_PROFILE.encoder_modules_fit(torch.device('cuda'), elements, 4)
    assert not CPU_PROFILE.encoder_modules_fit(torch.device('cpu'), 1, 4)


def test_accelerator_sizing_gives_the_same_descriptors_and_encodings(monkeypatch):
    monkeypatch.setattr(device_budget, 'available_memory_bytes', lambda device: _GPU_BYTES)
    torch.manual_seed(1)
    model = AnyUp().eval()
    image, features = torch.randn(1, 3, 60, 52), torch.randn(1, 40, 9, 7)
    with torch.no_grad():
        ref = model(image, features)
        ref_unified = model.unify_features(features)
        with forced_device_profile('accelerator'):
            out = model(image, features)
            unified = model.unify_features(features)
    # Whole maps and cache-sized chunks compute the same sums in another order, and without
    # host reads the unification always subtracts the maximum before its exponentials (the
    # CPU skips that when its bound allows): rounding that the descriptors' GroupNorms
    # magnify to about 1e-5 of their largest value here (2.7).
    torch.testing.assert_close(unified, ref_unified, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(('size', 'feature_size'), [(448, 32), (1024, 73)])
def test_accelerator_sizing_dispatches_a_bounded_number_of_operations(
    monkeypatch, size, feature_size
):
    """The CUDA sizing runs the encoders and the feature unification in a few dozen kernels.

    Counts at 448 px / 32 x 32 x 384 and at 1024 px / 73 x 73 x 384 alike (all operations,
    kernel-launching ones), first calls: encoders (83, 58), the three encoders' 15
    convolutions, 12 GroupNorms and SiLUs, the residual adds, the rotary embedding and two
    poolings; feature unification (75, 48), one response chunk and the key encoder's blocks,
    with the tap counts built for the new shape (29 kernels on later calls, see
    ``test_kernel_count.py``). The CPU's cache-sized chunks dispatch about 2,800 operations
    for the unification at 448. The bounds leave room for a few more operations, not for a
    cost per chunk.
    """
    monkeypatch.setattr(device_budget, 'available_memory_bytes', lambda device: _GPU_BYTES)
    with forced_device_profile('accelerator'):
        counts = _stage_counts(size, feature_size)
    assert counts['encoders'][1] <= 70 and counts['feature unification'][1] <= 70, counts
    assert counts['encoders'][0] <= 100 and counts['feature unification'][0] <= 100, counts


def test_fused_encoder_chunk_follows_the_profile(monkeypatch):
    seen = []
    monkeypatch.setattr(
        fused_encoder._Encoders, 'encode_one', lambda self, *a: seen.append(a[3]) or ([], [])
    )
    model = AnyUp()
    encoders = (model.image_encoder, model.query_encoder, model.key_encoder, model.rope)
    with torch.no_grad():
        fused_encoder.fused_encoder_forward(torch.randn(1, 3, 4, 4), *encoders, [], [])
        with forced_device_profile('accelerator'):
            fused_encoder.fused_encoder_forward(torch.randn(1, 3, 4, 4), *encoders, [], [])
    assert seen == [CPU_PROFILE.encoder_chunk_tokens, ACCELERATOR_PROFILE.encoder_chunk_tokens]


def test_finite_check_on_the_cpu_raises_the_named_error():
    model = AnyUp(finite_check_waits=False).eval()
    image, features = torch.randn(1, 3, 16, 16), torch.randn(1, 8, 2, 2)
    features[0, 0, 0, 0] = float('nan')
    with pytest.raises(ValueError, match=r'features contains 1 NaN or infinite value\(s\)'):
        model(image, features)
    image[0, 0, 0, 0] = float('inf')
    with pytest.raises(ValueError, match=r'image contains 1 NaN or infinite value\(s\)'):
        check_all_finite([(image, 'image'), (features, 'features')])


def test_finite_check_without_waiting_is_a_device_assertion():
    # On the CPU an asynchronous assertion fails at once, with the message CUDA would print.
    bad = torch.tensor([1.0, float('nan')])
    with pytest.raises(RuntimeError, match='one of image, features contains NaN or infinite'):
        check_all_finite([(torch.ones(2), 'image'), (bad, 'features')], wait=False)
    check_all_finite([(torch.ones(2), 'image')], wait=False)


def test_memory_guard_counts_cached_but_unused_cuda_memory(monkeypatch):
    free, reserved, allocated = 1 * 2**30, 6 * 2**30, 2 * 2**30
    monkeypatch.setattr(torch.cuda, 'mem_get_info', lambda device=None: (free, 80 * 2**30))
    monkeypatch.setattr(torch.cuda, 'memory_reserved', lambda device=None: reserved)
    monkeypatch.setattr(torch.cuda, 'memory_allocated', lambda device=None: allocated)
    cuda = torch.device('cuda')
    assert available_memory_bytes(cuda) == free + reserved - allocated
    # 3 GiB: more than the driver's free memory, less than what PyTorch can hand out.
    check_result_fits(3 * 2**30, cuda, 'the output')
    with pytest.raises(ValueError, match='needs 6442450944 bytes'):
        check_result_fits(6 * 2**30, cuda, 'the output')
    assert checks.available_memory_bytes is available_memory_bytes


def _precisions() -> tuple[str, str]:
    """The float32 precision of cuDNN convolutions and of CUDA matrix products."""
    return torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision


#: Every float32 precision setting the tests below change, the global one first.
_SETTINGS = (
    torch.backends,
    torch.backends.cuda.matmul,
    torch.backends.cudnn.conv,
    torch.backends.cudnn.rnn,
    torch.backends.mkldnn.matmul,
    torch.backends.mkldnn.conv,
    torch.backends.mkldnn.rnn,
)


@pytest.mark.parametrize('api', ['legacy', 'per backend', 'global'])
def test_ieee_float32_switches_tf32_off_and_restores_the_flags(api):
    previous = [s.fp32_precision for s in _SETTINGS]
    try:
        if api == 'legacy':
            torch.backends.cudnn.allow_tf32 = True
            torch.backends.cuda.matmul.allow_tf32 = True
        elif api == 'per backend':
            torch.backends.cudnn.conv.fp32_precision = 'tf32'
            torch.backends.cuda.matmul.fp32_precision = 'tf32'
        else:
            torch.backends.fp32_precision = 'tf32'
        with ieee_float32():
            assert _precisions() == ('ieee', 'ieee')
        assert _precisions() == ('tf32', 'tf32')
    finally:
        for setting, value in zip(_SETTINGS, previous):
            setting.fp32_precision = value


def test_forward_runs_in_the_float32_scope(monkeypatch):
    model = AnyUp().eval()
    cuda = torch.device('cuda')
    with model.float32_scope(cuda):
        assert _precisions() == ('ieee', 'ieee')
    assert type(model.float32_scope(torch.device('cpu'))) is type(
        AnyUp(allow_tf32=True).float32_scope(cuda)
    )
    entered = []
    original = AnyUp.float32_scope
    monkeypatch.setattr(
        AnyUp,
        'float32_scope',
        lambda self, device: entered.append(device) or original(self, device),
    )
    with torch.no_grad():
        model(torch.randn(1, 3, 16, 16), torch.randn(1, 8, 2, 2))
    assert entered == [torch.device('cpu')]


def _cuda_case(size: int = 448, feature_size: int = 32):
    torch.manual_seed(0)
    model = AnyUp().cuda().eval()
    image = torch.randn(1, 3, size, size, device='cuda')
    features = torch.randn(1, 384, feature_size, feature_size, device='cuda')
    return model, image, features


@needs_cuda
def test_cuda_forward_has_no_host_sync():
    model, image, features = _cuda_case()
    with torch.no_grad():
        model(image, features)  # warm-up: lazy initialisation may synchronise
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode('error')
        try:
            model(image, features)
        finally:
            torch.cuda.set_sync_debug_mode('default')


@needs_cuda
def test_cuda_forward_is_ieee_float32_by_default():
    model, image, features = _cuda_case(112, 8)
    previous = torch.backends.cudnn.conv.fp32_precision
    try:
        torch.backends.cudnn.conv.fp32_precision = 'tf32'
        with torch.no_grad():
            out = model(image, features)
            ref = model.double()(image.double(), features.double())
        assert torch.backends.cudnn.conv.fp32_precision == 'tf32'
    finally:
        torch.backends.cudnn.conv.fp32_precision = previous
    # Random weights amplify rounding elementwise; over the map, IEEE float32 stays near
    # 3e-5 of float64 (the CPU's figure), where TF32's 10-bit mantissa gives about 1e-3.
    relative = (out.double() - ref).norm() / ref.norm()
    assert relative < 2e-4, f'relative Frobenius error {relative:.2e}'


@needs_cuda
def test_cuda_compile_reduce_overhead_matches_eager():
    model, image, features = _cuda_case()
    with torch.no_grad():
        eager = model(image, features)
        compiled = torch.compile(model, mode='reduce-overhead')
        with ieee_float32():
            for _ in range(3):  # record, then replay the CUDA graph
                out = compiled(image, features).clone()
    # The compiled graph orders floating-point work its own way (as in test_export).
    relative = (out - eager).norm() / eager.norm()
    assert relative <= 1e-4, f'relative Frobenius error {relative:.2e}'


def test_accelerator_feature_unification_patches_stay_in_the_budget(monkeypatch):
    # A budget smaller than the map: strips and chunks again, same descriptors.
    monkeypatch.setattr(device_budget, 'available_memory_bytes', lambda device: 2**16)
    torch.manual_seed(2)
    model = AnyUp().eval()
    features = F.normalize(torch.randn(1, 6, 5, 7), dim=1)
    with torch.no_grad():
        ref = model.key_features_encoder.first_layer(features)
        with forced_device_profile('accelerator'):
            out = model.key_features_encoder.first_layer(features)
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-7)
