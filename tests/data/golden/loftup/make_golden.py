"""Writes loftup.pt: outputs of the published LoftUp code run in float64 on small inputs.

Usage (the published repository extracted to PUBLISHED; its modules import einops):

    PYTHONPATH=/path/with/einops .venv/bin/python tests/data/golden/loftup/make_golden.py PUBLISHED

Weights are not stored: both this script and the test draw them with
``anyup_plugin.testing.golden.perturbed_state_dict`` from the model's key names and shapes.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys

import torch
import torch.nn.functional as F

from anyup_plugin.testing.golden import golden_errors, perturbed_state_dict

HERE = os.path.dirname(os.path.abspath(__file__))

# name, seed, feature channels, batch, image (H, W), output (H', W'), stored channel and pixel
# steps (the published-dims case keeps every 4th channel of every 8th row and column).
CASES = [
    ('same_size', 0, 8, 2, (28, 43), (28, 43), 1, 1),
    ('smaller', 1, 8, 2, (28, 30), (9, 13), 1, 1),
    ('larger', 2, 8, 2, (28, 30), (31, 45), 1, 1),
    ('published_dims', 3, 384, 1, (224, 224), (112, 112), 4, 8),
]
PATCH_SIZE = 14
#: Inputs are stored as int8 and are that / INPUT_DIVISOR: exact in float32 and a quarter of
#: its size (the published-dims case needs a 224x224 image and 384-channel features).
INPUT_DIVISOR = 32


def build_published(published: str, channels: int, seed: int) -> torch.nn.Module:
    """The published torch.hub model (UpsamplerwithChannelNorm) with perturbed weights."""
    sys.path.insert(0, published)
    from upsamplers.layers import ChannelNorm
    from upsamplers.upsamplers import LoftUp, UpsamplerwithChannelNorm

    # Built in float32 like the released model, so that the float32 weights the test draws
    # are exactly the weights of this float64 run.
    model = UpsamplerwithChannelNorm(LoftUp(channels, lr_pe_type='sine'), ChannelNorm(channels))
    model.load_state_dict(perturbed_state_dict(model.state_dict(), seed))
    return model.eval()


def quantise(x: torch.Tensor) -> torch.Tensor:
    """int8 codes of ``x * INPUT_DIVISOR``."""
    return (x * INPUT_DIVISOR).round().clamp(-127, 127).to(torch.int8)


def run(model: torch.nn.Module, image: torch.Tensor, features: torch.Tensor, size, dtype):
    """The published call, everything in ``dtype`` (also the constants it builds itself)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        image, features = image.to(dtype), features.to(dtype)
        if tuple(image.shape[-2:]) != tuple(size):
            # The published example resizes the guidance image to choose the output size.
            image = F.interpolate(image, size=size, mode='bilinear', align_corners=False)
        with torch.no_grad():
            return copy.deepcopy(model).to(dtype)(features, image)
    finally:
        torch.set_default_dtype(previous)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('published', help='an extracted copy of andrehuang/loftup')
    args = parser.parse_args()
    published = os.path.abspath(args.published)

    cases = []
    for name, seed, channels, batch, image_size, size, c_step, p_step in CASES:
        generator = torch.Generator().manual_seed(100 + seed)
        feature_size = tuple(s // PATCH_SIZE for s in image_size)
        image_int8 = quantise(torch.randn(batch, 3, *image_size, generator=generator))
        features_int8 = quantise(torch.randn(batch, channels, *feature_size, generator=generator))
        image = image_int8.float() / INPUT_DIVISOR
        features = features_int8.float() / INPUT_DIVISOR
        model = build_published(published, channels, seed)
        expected = run(model, image, features, size, torch.float64)
        published32 = run(model, image, features, size, torch.float32)
        errors = golden_errors(published32, expected)
        keep = (slice(None), slice(None, None, c_step), slice(None, None, p_step))
        keep += (slice(None, None, p_step),)
        cases.append(
            {
                'name': name,
                'seed': seed,
                'feature_channels': channels,
                'image_int8': image_int8,
                'features_int8': features_int8,
                'input_divisor': INPUT_DIVISOR,
                'output_size': size,
                'channel_step': c_step,
                'pixel_step': p_step,
                'expected': expected[keep].float().contiguous(),
                'published_float32_errors': errors,
            }
        )
        print(f'{name}: output {tuple(expected.shape)}, published float32 vs float64: {errors}')
    keys = {k: tuple(v.shape) for k, v in build_published(published, 384, 0).state_dict().items()}
    path = os.path.join(HERE, 'loftup.pt')
    torch.save({'cases': cases, 'published_keys': keys}, path)
    print(f'wrote {path} ({os.path.getsize(path)} bytes)')


if __name__ == '__main__':
    main()
