"""The weightless methods against per-pixel loops of their definitions, and hand cases."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from anyup_plugin.core.methods import UpsamplingMethod, build_method, classical
from anyup_plugin.core.methods.classical import (
    BicubicUpsampler,
    GuidedFilterUpsampler,
    JointBilateralUpsampler,
    box_mean,
)

METHODS = (BicubicUpsampler, GuidedFilterUpsampler, JointBilateralUpsampler)


def _inputs(b=2, c=3, h=3, w=4, image_size=(10, 13), seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(b, 3, *image_size, generator=g, dtype=torch.float64)
    features = torch.randn(b, c, h, w, generator=g, dtype=torch.float64)
    return image, features


def _window(n: int, i: int, r: int) -> slice:
    return slice(max(0, i - r), min(n, i + r + 1))


# --- brute-force definitions, one output value at a time ----------------------------------


def _cubic(t: float, a: float = -0.75) -> float:
    """Keys' cubic convolution kernel (PyTorch's bicubic uses a = -0.75)."""
    t = abs(t)
    if t <= 1:
        return (a + 2) * t**3 - (a + 3) * t**2 + 1
    if t < 2:
        return a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a
    return 0.0


def _bicubic_loop(features, size):
    b, c, h, w = features.shape
    out = torch.zeros(b, c, *size, dtype=features.dtype)
    for y in range(size[0]):
        sy = (y + 0.5) * h / size[0] - 0.5
        for x in range(size[1]):
            sx = (x + 0.5) * w / size[1] - 0.5
            fy, fx = math.floor(sy), math.floor(sx)
            for iy in range(fy - 1, fy + 3):
                for ix in range(fx - 1, fx + 3):
                    weight = _cubic(sy - iy) * _cubic(sx - ix)
                    cell = features[:, :, min(max(iy, 0), h - 1), min(max(ix, 0), w - 1)]
                    out[:, :, y, x] += weight * cell
    return out


def _box_mean_loop(x, r):
    out = torch.empty_like(x)
    h, w = x.shape[-2:]
    for y in range(h):
        for z in range(w):
            out[..., y, z] = x[..., _window(h, y, r), _window(w, z, r)].mean((-2, -1))
    return out


def _guided_filter_loop(guide, p, r, eps):
    """He et al.'s filter of one (H, W) input with a (k, H, W) guide, window by window."""
    k, h, w = guide.shape
    a = torch.zeros(k, h, w, dtype=p.dtype)
    b = torch.zeros(h, w, dtype=p.dtype)
    for y in range(h):
        for x in range(w):
            gw = guide[:, _window(h, y, r), _window(w, x, r)].reshape(k, -1)
            pw = p[_window(h, y, r), _window(w, x, r)].reshape(-1)
            mean_i, mean_p = gw.mean(1), pw.mean()
            cov = gw @ gw.T / gw.shape[1] - torch.outer(mean_i, mean_i)
            cov_ip = (gw * pw).mean(1) - mean_i * mean_p
            a[:, y, x] = torch.linalg.solve(cov + eps * torch.eye(k, dtype=p.dtype), cov_ip)
            b[y, x] = mean_p - a[:, y, x] @ mean_i
    q = torch.zeros(h, w, dtype=p.dtype)
    for y in range(h):
        for x in range(w):
            ys, xs = _window(h, y, r), _window(w, x, r)
            fits = (a[:, ys, xs] * guide[:, y, x, None, None]).sum(0) + b[ys, xs]
            q[y, x] = fits.mean()
    return q


def _guided_loop(image, features, size, r, eps, gray=False):
    guide = F.interpolate(image, size=size, mode='bilinear', align_corners=False, antialias=True)
    if gray:
        guide = guide.mean(1, keepdim=True)
    p = F.interpolate(features, size=size, mode='bilinear', align_corners=False)
    out = torch.empty_like(p)
    for i in range(p.shape[0]):
        for c in range(p.shape[1]):
            out[i, c] = _guided_filter_loop(guide[i], p[i, c], r, eps)
    return out


def _jbu_loop(image, features, size, r, sigma_spatial, sigma_range):
    b, c, h, w = features.shape
    guide = F.interpolate(image, size=size, mode='bilinear', align_corners=False, antialias=True)
    guide_low = F.interpolate(image, size=(h, w), mode='area')
    out = torch.zeros(b, c, *size, dtype=features.dtype)
    for y in range(size[0]):
        py = (y + 0.5) * h / size[0] - 0.5
        for x in range(size[1]):
            px = (x + 0.5) * w / size[1] - 0.5
            cy, cx = math.floor(py + 0.5), math.floor(px + 0.5)
            total = torch.zeros(b, dtype=features.dtype)
            for qy in range(cy - r, cy + r + 1):
                for qx in range(cx - r, cx + r + 1):
                    if not (0 <= qy < h and 0 <= qx < w):
                        continue
                    spatial = math.exp(-((py - qy) ** 2 + (px - qx) ** 2) / (2 * sigma_spatial**2))
                    colour = ((guide[:, :, y, x] - guide_low[:, :, qy, qx]) ** 2).sum(1)
                    weight = spatial * torch.exp(-colour / (2 * sigma_range**2))
                    out[:, :, y, x] += weight[:, None] * features[:, :, qy, qx]
                    total += weight
            out[:, :, y, x] /= total[:, None]
    return out


# --- against the loops ----------------------------------------------------------------------


@pytest.mark.parametrize('size', [(7, 9), (2, 3)])
def test_bicubic_is_keys_cubic_convolution_with_clamped_borders(size):
    _, features = _inputs()
    out = BicubicUpsampler()(None, features, size)
    torch.testing.assert_close(out, _bicubic_loop(features, size), rtol=0, atol=1e-10)


def test_bicubic_keeps_its_overshoot():
    # A step: cubic convolution rings past both plateaus, and nothing clamps it.
    features = torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=torch.float64).view(1, 1, 1, 4)
    out = BicubicUpsampler()(None, features, (1, 16))
    assert out.max() > 1.01 and out.min() < -0.01


def test_box_mean_divides_each_window_by_the_pixels_it_holds():
    x = torch.randn(2, 3, 6, 7, dtype=torch.float64)
    for r in (0, 1, 2, 5, 6, 9):  # windows inside, up to and past both borders
        torch.testing.assert_close(box_mean(x, r), _box_mean_loop(x, r), rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ('guide', 'size', 'radius', 'eps'),
    [('color', (7, 9), 2, 0.05), ('gray', (7, 9), 1, 0.3), ('color', (5, 4), 3, 1e-3)],
)
def test_guided_filter_matches_the_per_window_definition(guide, size, radius, eps):
    image, features = _inputs(c=2)
    method = GuidedFilterUpsampler(radius=radius, eps=eps, guide=guide)
    out = method(image, features, size)
    expected = _guided_loop(image, features, size, radius, eps, gray=guide == 'gray')
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize(
    ('size', 'radius', 'sigmas'), [((7, 9), 1, (1.0, 1.0)), ((11, 5), 2, (0.7, 2.0))]
)
def test_joint_bilateral_matches_the_per_pixel_definition(size, radius, sigmas):
    image, features = _inputs(c=2, h=4, w=3)
    method = JointBilateralUpsampler(radius, *sigmas)
    out = method(image, features, size)
    expected = _jbu_loop(image, features, size, radius, *sigmas)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-10)


def test_joint_bilateral_over_the_whole_grid_and_past_it():
    # Radius larger than the grid: every cell of a 2x3 grid is a neighbour of every pixel.
    image, features = _inputs(c=2, h=2, w=3)
    out = JointBilateralUpsampler(radius=4, sigma_range=0.8)(image, features, (5, 6))
    expected = _jbu_loop(image, features, (5, 6), 4, 1.0, 0.8)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-10)


# --- hand cases -----------------------------------------------------------------------------


@pytest.mark.parametrize('cls', METHODS)
def test_constant_features_stay_constant(cls):
    image, _ = _inputs(image_size=(20, 22))
    values = torch.tensor([1.5, -3.0, 7.25], dtype=torch.float64)
    features = values.view(1, 3, 1, 1).expand(2, 3, 3, 4).contiguous()
    out = cls()(image, features, (17, 19))
    torch.testing.assert_close(out, values.view(1, 3, 1, 1).expand_as(out), rtol=0, atol=1e-12)


def test_guided_filter_with_huge_eps_is_the_box_mean_of_the_bilinear_box_mean():
    # eps -> infinity: a_k -> 0, b_k -> the window mean of p, and each pixel averages the b_k
    # of the windows that hold it: the box mean, applied twice.
    image, features = _inputs()
    size, r = (8, 11), 2
    out = GuidedFilterUpsampler(radius=r, eps=1e30)(image, features, size)
    p = F.interpolate(features, size=size, mode='bilinear', align_corners=False)
    expected = _box_mean_loop(_box_mean_loop(p, r), r)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-10)


def test_guided_filter_with_tiny_eps_follows_an_edge_of_the_guide():
    # Features are a blurred step; the guide has a sharp one in the middle: with a small eps
    # the output jumps where the guide does, far sharper than the bilinear input.
    size = (1, 28)
    image = torch.zeros(1, 3, *size, dtype=torch.float64)
    image[..., 14:] = 2.0
    features = torch.tensor([0.0, 1.0], dtype=torch.float64).view(1, 1, 1, 2)
    bilinear = F.interpolate(features, size=size, mode='bilinear', align_corners=False)[0, 0, 0]
    out = GuidedFilterUpsampler(radius=3, eps=1e-6)(image, features, size)[0, 0, 0]
    # Bilinear: 1/14 per pixel; filtered: 2/7 here, four times as steep.
    assert bilinear[14] - bilinear[13] == pytest.approx(1 / 14)
    assert out[14] - out[13] > 3.9 * (bilinear[14] - bilinear[13])


def test_guided_filter_radius_defaults_to_one_feature_cell():
    method = GuidedFilterUpsampler()
    assert method.window_radius((16, 16), (224, 224)) == 14
    assert method.window_radius((32, 20), (64, 100)) == 5  # the larger factor
    assert method.window_radius((16, 16), (8, 8)) == 1  # shrinking: at least one pixel
    assert GuidedFilterUpsampler(radius=3).window_radius((16, 16), (224, 224)) == 3


def test_joint_bilateral_with_huge_sigma_range_is_a_spatial_gaussian_weighting():
    # No colour term: the weights factor into rows and columns, so the output is W_y F W_x^T
    # with each row of W_y (and W_x) the normalised Gaussians of the cells in reach.
    image, features = _inputs(h=5, w=4)
    size, r, sigma = (9, 13), 1, 0.8
    out = JointBilateralUpsampler(r, sigma_spatial=sigma, sigma_range=1e12)(image, features, size)

    def weights(n_out, n_low):
        matrix = torch.zeros(n_out, n_low, dtype=torch.float64)
        for i in range(n_out):
            p = (i + 0.5) * n_low / n_out - 0.5
            nearest = math.floor(p + 0.5)  # the cell whose extent holds p
            for q in range(max(0, nearest - r), min(n_low, nearest + r + 1)):
                matrix[i, q] = math.exp(-((p - q) ** 2) / (2 * sigma**2))
        return matrix / matrix.sum(1, keepdim=True)

    expected = weights(size[0], 5) @ features @ weights(size[1], 4).T
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize('cls', METHODS)
@pytest.mark.parametrize('size', [(30, 50), (3, 2), (1, 1)])
def test_output_shape_for_non_square_and_shrinking_sizes(cls, size):
    image = torch.randn(2, 3, 84, 112)
    features = torch.randn(2, 5, 6, 8)
    out = cls()(image, features, size)
    assert out.shape == (2, 5, *size) and out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize('cls', METHODS)
def test_output_size_defaults_to_the_image_size_and_half_precision_is_kept(cls):
    image = torch.randn(1, 3, 28, 42)
    features = torch.randn(1, 4, 2, 3).to(torch.bfloat16)
    out = cls()(image, features, None)
    assert out.shape == (1, 4, 28, 42) and out.dtype == torch.bfloat16


@pytest.mark.parametrize('cls', [GuidedFilterUpsampler, JointBilateralUpsampler])
def test_chunks_give_the_whole_map_result(cls, monkeypatch):
    image, features = _inputs(c=5, h=3, w=4, image_size=(12, 15))
    whole = cls()(image, features, (12, 15))
    monkeypatch.setattr(classical, '_CHUNK_ELEMENTS', 1)  # one channel / one row at a time
    torch.testing.assert_close(cls()(image, features, (12, 15)), whole, rtol=0, atol=1e-12)


def test_guided_filter_in_float32_is_close_to_float64():
    # Cumulative sums over 1024-pixel rows: the guide and the features are centred first so
    # float32 keeps the window statistics' small differences.
    image, features = _inputs(b=1, c=4, h=4, w=4, image_size=(56, 56))
    features = features * 3 + 10  # far from zero on purpose
    method = GuidedFilterUpsampler()
    exact = method(image, features, (224, 224))
    single = method(image.float(), features.float(), (224, 224))
    error = (single.double() - exact).norm() / exact.norm()
    assert error < 1e-6


# --- construction, checkpoints, missing images ------------------------------------------------


def test_build_method_builds_each_with_its_arguments():
    method = build_method('guided_filter')
    assert isinstance(method, GuidedFilterUpsampler) and isinstance(method, UpsamplingMethod)
    assert method.feature_channels is None and method.patch_size is None
    assert build_method('guided_filter', radius=3, guide='grey').guide == 'gray'
    assert build_method('joint_bilateral', sigma_range=0.2).sigma_range == 0.2
    assert isinstance(build_method('bicubic'), BicubicUpsampler)


@pytest.mark.parametrize('name', ['bicubic', 'guided_filter', 'joint_bilateral'])
def test_a_checkpoint_is_refused(name, tmp_path):
    path = tmp_path / 'weights.pth'
    with pytest.raises(ValueError, match=rf"'{name}' .* has no weights, so it cannot load"):
        build_method(name, checkpoint=path)


@pytest.mark.parametrize('cls', [GuidedFilterUpsampler, JointBilateralUpsampler])
def test_image_guided_methods_refuse_no_image(cls):
    with pytest.raises(ValueError, match=rf"'{cls.name}' is guided by the image: pass the"):
        cls()(None, torch.randn(1, 4, 3, 3), (12, 12))


def test_bicubic_without_an_image_needs_an_output_size():
    features = torch.randn(1, 4, 3, 3)
    assert BicubicUpsampler()(None, features, (5, 7)).shape == (1, 4, 5, 7)
    with pytest.raises(ValueError, match='needs output_size when no image is given'):
        BicubicUpsampler()(None, features, None)


@pytest.mark.parametrize(
    ('kwargs', 'message'),
    [
        ({'radius': -1}, 'radius must be None or an int'),
        ({'eps': 0.0}, 'eps must be positive'),
        ({'guide': 'depth'}, "guide must be 'color' or 'gray'"),
    ],
)
def test_guided_filter_refuses_bad_hyper_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GuidedFilterUpsampler(**kwargs)


def test_joint_bilateral_refuses_bad_hyper_parameters():
    with pytest.raises(ValueError, match='radius must be an int'):
        JointBilateralUpsampler(radius=1.5)
    with pytest.raises(ValueError, match='must be positive'):
        JointBilateralUpsampler(sigma_range=0)


@pytest.mark.parametrize(
    'method',
    [
        BicubicUpsampler(),
        GuidedFilterUpsampler(guide='color'),
        GuidedFilterUpsampler(guide='gray'),
        JointBilateralUpsampler(),
    ],  # fmt: skip
    ids=['bicubic', 'guided_filter_color', 'guided_filter_gray', 'joint_bilateral'],
)
def test_gradients_reach_the_features(method):
    image, features = _inputs(b=1, c=2, h=3, w=3, image_size=(12, 12))
    features.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda f: method(image, f, (10, 11)), (features,))
