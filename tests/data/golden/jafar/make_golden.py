"""Writes jafar.pt: JAFAR's published model run in float64 on small generated inputs.

Usage (from the repository root, with an extracted copy of the published repository and
einops importable, e.g. ``pip install --target /tmp/site einops``)::

    PYTHONPATH=/tmp/site .venv/bin/python tests/data/golden/jafar/make_golden.py /path/to/JAFAR

The published ``src/upsampler/jafar.py`` builds its RoPE coordinates with
``utils.img.create_coordinate``, whose defaults are ``device='cuda'`` and ``dtype=float32``.
This script hands that same function the model's own device and dtype (the CPU; float64 for
the golden run, float32 for the published float32 error), after checking that it then returns
exactly what the published function returns for the CPU. Everything else is the published
code as it is; its weights come from ``perturbed_state_dict``, so the file stores inputs and
outputs only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(REPO))

from anyup_plugin.testing.golden import golden_errors, perturbed_state_dict  # noqa: E402

OUT = Path(__file__).resolve().parent / 'jafar.pt'
SEED = 0
SMALL_CHANNELS = 8

# name: (batch, feature h, w, output H', W'). Images are 14x the features (DINOv2 ViT-S/14);
# SMALL_CHANNELS-channel features keep the stored outputs small. Any output size works:
# the queries are the image encoding average-pooled to it.
CASES = {
    'image_size_nonsquare': (2, 2, 3, 28, 42),
    'smaller_than_x16': (2, 3, 2, 7, 5),
    'non_integer_ratio': (2, 2, 3, 20, 33),
    'beyond_image_size': (2, 2, 2, 33, 30),
    'one_row_of_tokens': (2, 1, 4, 9, 30),
}

# The published dimensions (its test_time_and_memory.py and training target): DINOv2 ViT-S/14
# features of a 224 x 224 image, upsampled to 224 x 224. The inputs are drawn again by the test
# from PUBLISHED_INPUT_SEED (their sums are stored to check the draw); the file keeps all 384
# channels at PUBLISHED_PIXELS output pixels drawn at random.
PUBLISHED_DIMS = (1, 384, 16, 16, 224, 224)
PUBLISHED_INPUT_SEED = 1234
PUBLISHED_PIXELS = 64


def published_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The published-dims case's float32 image, features and flat output-pixel indices."""
    batch, channels, h, w, out_h, out_w = PUBLISHED_DIMS
    generator = torch.Generator().manual_seed(PUBLISHED_INPUT_SEED)
    image = torch.randn(batch, 3, 14 * h, 14 * w, generator=generator)
    features = torch.randn(batch, channels, h, w, generator=generator)
    pixels = torch.randperm(out_h * out_w, generator=generator)[:PUBLISHED_PIXELS]
    return image, features, pixels


def _load_published(path: Path):
    sys.path.insert(0, str(path))
    import src.upsampler.jafar as published
    from utils.img import create_coordinate

    state = {'dtype': torch.float64}

    def coordinates(h, w, start=0, end=1, device='cuda', dtype=torch.float32):
        return create_coordinate(h, w, start, end, device='cpu', dtype=state['dtype'])

    for h, w in ((1, 4), (3, 5), (16, 16)):
        state['dtype'] = torch.float32
        assert torch.equal(coordinates(h, w), create_coordinate(h, w, device='cpu'))
    published.create_coordinate = coordinates
    return published.JAFAR, state


def _run(model_class, dtype_state, channels, weights, image, features, size):
    """(float64 output, float32 output) of the published model with ``weights``."""
    outputs = []
    for dtype in (torch.float64, torch.float32):
        dtype_state['dtype'] = dtype
        model = model_class(v_dim=channels).eval()
        model.load_state_dict(weights)
        model.to(dtype)
        with torch.no_grad():
            outputs.append(model(image.to(dtype), features.to(dtype), size))
    return outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('published', type=Path, help='extracted copy of PaulCouairon/JAFAR')
    args = parser.parse_args()
    model_class, dtype_state = _load_published(args.published.resolve())

    small_weights = perturbed_state_dict(model_class(v_dim=SMALL_CHANNELS).state_dict(), SEED)
    generator = torch.Generator().manual_seed(SEED)
    cases = []
    for name, (batch, h, w, out_h, out_w) in CASES.items():
        image = torch.randn(batch, 3, 14 * h, 14 * w, generator=generator, dtype=torch.float64)
        features = torch.randn(batch, SMALL_CHANNELS, h, w, generator=generator)
        features = features.double()
        expected, float32 = _run(
            model_class, dtype_state, SMALL_CHANNELS, small_weights, image, features, (out_h, out_w)
        )
        errors = golden_errors(float32, expected)
        cases.append(
            {
                'name': name,
                'image': image.float(),
                'features': features.float(),
                'output_size': (out_h, out_w),
                'expected': expected.float(),
                'published_float32_errors': errors,
            }
        )
        print(f'{name}: output {tuple(expected.shape)}, published float32 {errors}')

    batch, channels, h, w, out_h, out_w = PUBLISHED_DIMS
    image, features, pixels = published_inputs()
    weights = perturbed_state_dict(model_class(v_dim=channels).state_dict(), SEED)
    expected, float32 = _run(
        model_class,
        dtype_state,
        channels,
        weights,
        image.double(),
        features.double(),
        (out_h, out_w),
    )
    expected, float32 = (t.flatten(2)[..., pixels] for t in (expected, float32))
    errors = golden_errors(float32, expected)
    print(
        f'published_dims: {PUBLISHED_DIMS}, {PUBLISHED_PIXELS} pixels, published float32 {errors}'
    )
    published_case = {
        'name': 'published_dims',
        'input_seed': PUBLISHED_INPUT_SEED,
        'image_sum': float(image.double().sum()),
        'features_sum': float(features.double().sum()),
        'pixels': pixels.clone(),
        'output_size': (out_h, out_w),
        'expected': expected.float(),
        'published_float32_errors': errors,
    }
    torch.save(
        {
            'seed': SEED,
            'small_channels': SMALL_CHANNELS,
            'cases': cases,
            'published_dims': published_case,
        },
        OUT,
    )
    print(f'wrote {OUT} ({OUT.stat().st_size} bytes)')


if __name__ == '__main__':
    main()
