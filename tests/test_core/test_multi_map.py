"""Many maps, one encoder pass: each result equals its own call; each map is checked by name."""

from __future__ import annotations

import math

import pytest
import torch

from anyup_plugin import AnyUp
from anyup_plugin.core.anyup import STAGES


@pytest.fixture(scope='module')
def model() -> AnyUp:
    torch.manual_seed(0)
    return AnyUp().eval()


def _maps(seed: int = 0) -> tuple[torch.Tensor, list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(2, 3, 28, 42, generator=g)
    maps = [
        torch.randn(2, 6, 2, 3, generator=g),
        torch.randn(2, 4, 4, 6, generator=g),
        torch.randn(2, 6, 2, 3, generator=g),  # same feature size as the first
        torch.randn(2, 1, 7, 5, generator=g),
    ]
    return image, maps


@pytest.mark.parametrize('grad', [False, True], ids=['inference', 'autograd'])
@pytest.mark.parametrize(
    'output_size',
    [None, (14, 21), 9, [None, (14, 21), (30, 50), 12]],
    ids=['default', 'one-pair', 'one-int', 'per-map'],
)
def test_each_result_equals_its_single_call(model, output_size, grad):
    image, maps = _maps()
    per_map = output_size if isinstance(output_size, list) else [output_size] * len(maps)
    with torch.set_grad_enabled(grad):
        together = model(image, maps, output_size=output_size)
        alone = [model(image, f, output_size=s) for f, s in zip(maps, per_map)]
    assert isinstance(together, list) and len(together) == len(maps)
    for out, ref in zip(together, alone):
        torch.testing.assert_close(out, ref, rtol=0, atol=0)


def test_encoders_run_once_and_query_conv_once_per_size(model):
    image, maps = _maps()
    calls = []

    def record(name, fn, *args):
        calls.append(name)
        return fn(*args)

    with torch.no_grad():
        model.upsample_maps(image, maps, [(14, 21), (30, 50), (14, 21), None], run_stage=record)
    assert calls.count('encoders') == 1
    assert calls.count('query conv') == 3
    for stage in ('feature unification', 'aggregation', 'attention'):
        assert calls.count(stage) == len(maps)
    assert set(calls) == set(STAGES)


@pytest.mark.parametrize('grad', [False, True], ids=['inference', 'autograd'])
def test_a_map_given_twice_is_unified_once_and_each_result_equals_its_call(model, grad):
    """A pyramid of one map: its keys are computed once, each size attends to them."""
    image, maps = _maps()
    pyramid = [maps[1], maps[0], maps[1], maps[1]]
    sizes = [(7, 11), (14, 21), (28, 42), (3, 4)]
    calls = []

    def record(name, fn, *args):
        calls.append(name)
        return fn(*args)

    with torch.set_grad_enabled(grad):
        outs = model.upsample_maps(image, pyramid, sizes, run_stage=record)
        singles = [model(image, f, output_size=s) for f, s in zip(pyramid, sizes)]
    assert calls.count('feature unification') == calls.count('aggregation') == 2
    assert calls.count('attention') == len(pyramid)
    for out, single in zip(outs, singles):
        torch.testing.assert_close(out, single, rtol=0, atol=0)


def test_gradients_flow_to_every_map():
    torch.manual_seed(1)
    model = AnyUp(qk_dim=16, num_heads=2).train()
    image = torch.randn(1, 3, 14, 14, requires_grad=True)
    maps = [
        torch.randn(1, 3, 2, 2, requires_grad=True),
        torch.randn(1, 5, 3, 3, requires_grad=True),
    ]
    sum(out.square().mean() for out in model(image, maps)).backward()
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in maps)
    assert image.grad is not None


_OK = torch.randn(1, 4, 2, 2)


@pytest.mark.parametrize(
    ('maps', 'output_size', 'error', 'match'),
    [
        ([_OK, torch.randn(4, 2, 2)], None, ValueError, r'features\[1\] must have 4'),
        ([_OK, torch.randn(2, 4, 2, 2)], None, ValueError, r'features\[1\] \('),
        ([_OK, torch.full((1, 2, 2, 2), math.nan)], None, ValueError, r'features\[1\] contains 8'),
        ([_OK, torch.randn(1, 0, 2, 2)], None, ValueError, r'features\[1\] must have no'),
        ([_OK, 'x'], None, TypeError, r'features\[1\] must be a torch.Tensor'),
        ([], None, ValueError, 'at least one feature map'),
        ([_OK, _OK], [(4, 4)] * 3, ValueError, 'holds 3 sizes for 2 feature'),
        ([_OK, _OK], [(4, 4), (0, 4)], ValueError, r'output_size\[1\] must be pos'),
        ([_OK, _OK], [(4, 4), (4.5, 4)], ValueError, r'output_size\[1\] must be'),
        ([_OK, _OK], (4, 4, 4), ValueError, 'output_size must be None, an int'),
    ],
)
def test_bad_maps_are_named(model, maps, output_size, error, match):
    with pytest.raises(error, match=match):
        model(torch.randn(1, 3, 8, 8), maps, output_size)


def test_a_single_map_keeps_its_plain_name(model):
    with pytest.raises(ValueError, match=r'^features must have 4 dimensions'):
        model(torch.randn(1, 3, 8, 8), torch.randn(4, 2, 2))


def test_an_output_that_cannot_fit_fails_before_allocating(model):
    side = 2**20
    needed = 1 * 4 * side * side * 4 + 2 * 128 * side * side * 4
    with pytest.raises(ValueError, match=rf'needs {needed} bytes \(.* GiB\) but only'):
        model(torch.randn(1, 3, 8, 8), torch.randn(1, 4, 2, 2), output_size=side)


def test_maps_sharing_an_output_size_share_query_bands(model, monkeypatch):
    """Bands of 3 output rows: the maps of one size each read every band before any is freed."""
    from anyup_plugin.core.attention import queries

    image, maps = _maps(seed=1)
    sizes = [(14, 21), (14, 21), (30, 50), (14, 21)]
    with torch.no_grad():
        whole = model(image, maps, output_size=sizes)
        monkeypatch.setattr(queries, 'QUERY_BAND_ELEMENTS', 2 * 3 * 21 * model.qk_dim)
        banded = model(image, maps, output_size=sizes)
        alone = [model(image, f, output_size=s) for f, s in zip(maps, sizes)]
    for out, single, ref in zip(banded, alone, whole):
        torch.testing.assert_close(out, single, rtol=0, atol=0)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('batch', [1, 2])
def test_maps_at_image_resolution_keep_their_keys(model, batch):
    """Unpooled keys must not live in the output the encoders borrowed.

    The largest output lends its memory to the encoders; here the keys need no pooling, so
    without a copy the second map would read keys that the first map's attention overwrote.
    """
    g = torch.Generator().manual_seed(2)
    image = torch.randn(batch, 3, 12, 10, generator=g)
    maps = [
        torch.randn(batch, 300, 12, 10, generator=g),
        torch.randn(batch, 2, 12, 10, generator=g),
    ]
    with torch.no_grad():
        together = model(image, maps)
        alone = [model(image, f) for f in maps]
    reference = [model(image, f.requires_grad_()).detach() for f in maps]
    for out, single, ref in zip(together, alone, reference):
        torch.testing.assert_close(out, single, rtol=0, atol=0)
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ('channels', 'lent_maps'),
    [(64, 0), (128, 1), (255, 1), (256, 2), (384, 2), (511, 2), (512, 3), (900, 3)],
)
def test_the_encoders_borrow_only_what_keeps_the_peak(model, channels, lent_maps):
    """As many working maps as the output holds, up to two; all three from four maps on."""
    image = torch.randn(1, 3, 12, 10)
    lent = []

    def record(name, fn, *args):
        if name == 'encoders':
            lent.append(args[-1])
        return fn(*args)

    maps = [torch.randn(1, 8, 3, 3), torch.randn(1, channels, 3, 3)]
    with torch.no_grad():
        model.upsample_maps(image, maps, run_stage=record)
    working_map = model.qk_dim * 12 * 10
    assert (0 if lent[0] is None else lent[0].numel()) == lent_maps * working_map
    model.upsample_maps(image, maps, run_stage=record)  # with autograd: the module path
    assert lent[1] is None
