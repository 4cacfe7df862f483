"""Writes naf.pt: the published NAF (github.com/valeoai/NAF) run in float64 on small inputs.

Usage (einops on the path, e.g. ``pip install --target /tmp/site einops``)::

    PYTHONPATH=/tmp/site python tests/data/golden/naf/make_golden.py /path/to/extracted/NAF

The published model needs NATTEN (a compiled extension that does not run here). Its two
calls, ``natten.functional.na2d_qk`` and ``na2d_av`` (the 0.17 API the authors developed
with), are provided by a stand-in module built on
:func:`anyup_plugin.core.methods.neighborhood_attention.neighborhood_window` (NATTEN's window,
tested against a port of NATTEN's ``get_window_start``) with plain gathers: every other line
that runs is the published code. Weights come from
:func:`anyup_plugin.testing.golden.perturbed_state_dict`, so the file holds no weights.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

import torch

from anyup_plugin.core.methods.neighborhood_attention import neighborhood_window
from anyup_plugin.testing.golden import golden_errors, perturbed_state_dict

SEED = 0

#: (name, batch, channels, feature (h, w), image (H, W), output (H', W')).
CASES = [
    # x2 with batch 2 and non-square maps.
    ('x2_batch2', 2, 8, (10, 12), (40, 48), (20, 24)),
    # Non-integer ratios (dilation 3 per axis) and an image taller than 4x the output, which
    # the published code shrinks to min(H, 4 H', 4 W') x min(W, 4 W', 4 H').
    ('ratio_3.4x3.6_tall_image', 1, 8, (9, 11), (125, 60), (31, 40)),
    # x8 (dilation 8), the image half the output size.
    ('x8', 1, 4, (9, 10), (36, 40), (72, 80)),
    # Fewer feature cells (8) than the kernel (9) on one axis: an output size NATTEN allows.
    ('small_features', 2, 8, (8, 12), (28, 56), (12, 24)),
    # Output the feature size (dilation 1), the image smaller than the output.
    ('x1_small_image', 2, 12, (10, 9), (7, 6), (10, 9)),
    # DINOv2 ViT-S/14's 384 channels, output the feature size.
    ('vits14_channels', 1, 384, (9, 9), (18, 18), (9, 9)),
]


def _windows(shape, kernel_size, dilation, device):
    (h, w), (kh, kw), (dh, dw) = shape, kernel_size, dilation
    rows = neighborhood_window(h, kh, dh, device)
    cols = neighborhood_window(w, kw, dw, device)
    return rows[:, None, :, None], cols[None, :, None, :]  # index (H, W, kh, kw)


def _na2d_qk(query, key, kernel_size, dilation, **_):
    """NATTEN 0.17 ``na2d_qk``: (B, n, H, W, D) x2 -> (B, n, H, W, kh * kw) scores."""
    rows, cols = _windows(query.shape[2:4], kernel_size, dilation, query.device)
    keys = key[:, :, rows, cols]  # (B, n, H, W, kh, kw, D)
    return (query[:, :, :, :, None, None, :] * keys).sum(-1).flatten(-2)


def _na2d_av(attn, value, kernel_size, dilation, **_):
    """NATTEN 0.17 ``na2d_av``: weights (B, n, H, W, kh * kw), values (B, n, H, W, D)."""
    rows, cols = _windows(value.shape[2:4], kernel_size, dilation, value.device)
    values = value[:, :, rows, cols]  # (B, n, H, W, kh, kw, D)
    weights = attn.unflatten(-1, tuple(kernel_size))[..., None]
    return (weights * values).sum((-3, -2))


def _install_natten_stand_in() -> None:
    natten = types.ModuleType('natten')
    functional = types.ModuleType('natten.functional')
    functional.na2d_qk, functional.na2d_av = _na2d_qk, _na2d_av
    natten.functional = functional
    sys.modules['natten'], sys.modules['natten.functional'] = natten, functional


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('published', type=Path, help='extracted copy of github.com/valeoai/NAF')
    parser.add_argument('--out', type=Path, default=Path(__file__).with_name('naf.pt'))
    args = parser.parse_args()

    _install_natten_stand_in()
    sys.path.insert(0, str(args.published.resolve()))
    from src.model import naf as published  # the path above makes it importable

    # The published RoPE makes its coordinates in the default dtype: float64 throughout.
    torch.set_default_dtype(torch.float64)
    reference = published.NAF().eval()  # hubconf.py's model: the published defaults
    weights = perturbed_state_dict(reference.state_dict(), SEED)
    reference.load_state_dict(weights)
    torch.set_default_dtype(torch.float32)
    single = published.NAF().eval()  # the published code in float32, for the README
    single.load_state_dict(weights)
    generator = torch.Generator().manual_seed(1234)

    cases = []
    for name, b, c, feature_size, image_size, output_size in CASES:
        # Inputs as stored (float32), so that float64 runs of them are comparable exactly.
        image = torch.randn(b, 3, *image_size, generator=generator).double()
        features = torch.randn(b, c, *feature_size, generator=generator).double()
        torch.set_default_dtype(torch.float64)
        with torch.no_grad():
            expected = reference(image, features, output_size)
        torch.set_default_dtype(torch.float32)
        with torch.no_grad():
            published_float32 = single(image.float(), features.float(), output_size)
        errors = golden_errors(published_float32, expected)
        print(json.dumps({'case': name, 'published_float32_vs_float64': errors}))
        cases.append(
            {
                'name': name,
                'image': image.float(),
                'features': features.float(),
                'output_size': output_size,
                'expected': expected.float(),
                'published_float32_errors': errors,
            }
        )
    torch.save({'seed': SEED, 'cases': cases}, args.out)
    print(f'wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)')


if __name__ == '__main__':
    main()
