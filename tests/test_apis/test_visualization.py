"""Tests of the PCA-to-RGB visualisation helpers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from anyup_plugin.apis import (
    compose_panel,
    denormalize_image,
    feature_panel,
    fit_pca,
    joint_pca_rgb,
    to_pil,
)

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def features(c: int = 16, h: int = 6, w: int = 8, b: int = 1, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, h, w, generator=g)


def test_joint_pca_gives_same_colours_to_same_features():
    low = features()
    up = F.interpolate(low, scale_factor=4, mode='nearest')
    low_rgb, up_rgb = joint_pca_rgb(low, up)
    assert low_rgb.shape == (1, 3, 6, 8) and up_rgb.shape == (1, 3, 24, 32)
    torch.testing.assert_close(up_rgb, F.interpolate(low_rgb, scale_factor=4, mode='nearest'))
    assert low_rgb.min() >= 0 and low_rgb.max() <= 1


def test_projection_is_fitted_on_reference_only():
    low = features(seed=0)
    other = features(seed=1) * 10 + 5  # very different statistics
    _, other_rgb = joint_pca_rgb(low, other)
    pca = fit_pca(low)
    torch.testing.assert_close(other_rgb, pca.to_rgb(other))
    assert not torch.allclose(other_rgb, fit_pca(other).to_rgb(other))


def test_pca_directions_are_orthonormal_and_deterministic():
    low = features(c=32, h=10, w=10)
    pca = fit_pca(low)
    gram = pca.components.T @ pca.components
    torch.testing.assert_close(gram, torch.eye(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(fit_pca(low.clone()).components, pca.components)
    # Signs are fixed, so a negated copy of the data gives the same directions.
    torch.testing.assert_close(fit_pca(-low).components, pca.components, atol=1e-5, rtol=0)


def test_first_component_follows_the_dominant_direction():
    direction = torch.zeros(8)
    direction[2] = 1.0
    t = torch.linspace(-1, 1, 20)
    feats = (t[:, None] * direction * 10 + 0.01 * torch.randn(20, 8)).T.reshape(1, 8, 4, 5)
    pca = fit_pca(feats)
    assert pca.components[2, 0] == pytest.approx(1.0, abs=1e-3)
    rgb = pca.to_rgb(feats)[0, 0].flatten()
    assert torch.all(rgb[1:] >= rgb[:-1] - 1e-6)  # red grows with t


@pytest.mark.parametrize('channels', [1, 2])
def test_fewer_than_three_channels(channels):
    rgb = joint_pca_rgb(features(c=channels))[0]
    assert rgb.shape == (1, 3, 6, 8) and torch.isfinite(rgb).all()
    torch.testing.assert_close(rgb[:, 2], torch.full_like(rgb[:, 2], 0.5))  # unused: grey


def test_unbatched_input_and_constant_features():
    rgb = joint_pca_rgb(torch.ones(4, 5, 5))[0]
    assert rgb.shape == (1, 3, 5, 5) and torch.isfinite(rgb).all()


def test_channel_mismatch_and_bad_values_raise():
    pca = fit_pca(features(c=16))
    with pytest.raises(ValueError, match='16 channels'):
        pca.to_rgb(features(c=8))
    bad = features()
    bad[0, 0, 0, 0] = float('nan')
    with pytest.raises(ValueError, match='NaN'):
        fit_pca(bad)
    with pytest.raises(ValueError, match='n_components'):
        fit_pca(features(), n_components=4)


def test_denormalize_and_to_pil_round_trip():
    raw = torch.rand(3, 5, 7)
    normalised = (raw - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
    torch.testing.assert_close(denormalize_image(normalised, MEAN, STD), raw)
    img = to_pil(raw)
    assert img.size == (7, 5) and img.mode == 'RGB'
    assert img.getpixel((6, 4)) == tuple(round(float(v) * 255) for v in raw[:, 4, 6])
    with pytest.raises(ValueError, match='rgb'):
        to_pil(torch.rand(4, 5, 7))


def test_compose_panel_size_and_gap():
    tiles = [Image.new('RGB', (10, 6), c) for c in ('red', 'green')] + [Image.new('RGB', (2, 2))]
    panel = compose_panel(tiles, gap=3)
    assert panel.size == (3 * 10 + 2 * 3, 6)
    assert panel.getpixel((11, 0)) == (255, 255, 255)  # gap
    assert panel.getpixel((13, 0)) == (0, 128, 0)
    with pytest.raises(ValueError, match='tiles'):
        compose_panel([])


def test_feature_panel():
    raw = torch.rand(1, 3, 28, 42)
    image = (raw - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
    low = features(c=12, h=2, w=3)
    up = F.interpolate(low, size=(28, 42), mode='bilinear', align_corners=False)
    panel = feature_panel(image, low, up, MEAN, STD)
    assert panel.size == (3 * 42, 28)
    left = panel.crop((0, 0, 42, 28))
    assert left.tobytes() == to_pil(raw[0]).tobytes()
    # The low-res tile is enlarged with nearest neighbour: constant within a 14 x 14 cell.
    cell = panel.crop((42, 0, 42 + 14, 14))
    assert len(cell.getcolors()) == 1
    with pytest.raises(ValueError, match='same channels'):
        feature_panel(image, low, up[:, :5], MEAN, STD)
