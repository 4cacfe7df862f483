"""Writes featup.pt: FeatUp's published JBU stack run in float64 on small generated inputs.

Usage (from the repository root, with an extracted copy of the published repository)::

    .venv/bin/python tests/data/golden/featup/make_golden.py /path/to/FeatUp [--extension]

The published ``featup/upsamplers.py`` imports its AdaptiveConv from a compiled extension
(``adaptive_conv_cuda_impl`` / ``adaptive_conv_cpp_impl``). By default this script provides
both module names with this project's PyTorch ``adaptive_conv`` (its forward, and its autograd
gradients as ``grad_input``/``grad_filters``), which ``tests/test_core/test_methods/
test_featup.py`` proves equal to the extension's C++ loops. With ``--extension`` it compiles
the published ``adaptive_conv.cpp`` with ``torch.utils.cpp_extension`` instead (needs a C++
compiler; slow: the C++ indexes one scalar tensor at a time) and reports how far the outputs
are from the default run. Everything else is the published code as it is; its weights come
from ``perturbed_state_dict``, so the file stores inputs and outputs only.
"""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(REPO))

from anyup_plugin.core.methods.adaptive_conv import adaptive_conv  # noqa: E402
from anyup_plugin.testing.golden import golden_errors, perturbed_state_dict  # noqa: E402

OUT = Path(__file__).resolve().parent / 'featup.pt'
SEED = 0

# name: (batch, channels, feature h, w, image H, W, output channels stored (None: all)).
# The image is 14x the features up to cropping (the DINOv2 ViT-S/14 default patch size);
# 'uneven_image' pools 61 x 47 pixels to each step's size. The stack has one output size,
# 16 h x 16 w; 2 x 2 is the smallest map it takes. 'published_dims' has DINOv2 ViT-S/14's
# 384 channels; the final 1 x 1 convolution mixes them all into each output channel, and
# the file keeps the first 16 of them to stay small.
CASES = {
    'batch2_nonsquare': (2, 6, 3, 5, 42, 70, None),
    'smallest_map': (1, 5, 2, 2, 28, 28, None),
    'uneven_image': (1, 4, 4, 3, 61, 47, None),
    'published_dims': (1, 384, 2, 3, 28, 42, 16),
}


def _torch_extension() -> types.ModuleType:
    """The extension's three functions, from this project's adaptive_conv and autograd."""

    def grads(grad_output, filters, inputs, wrt):
        filters = filters.detach().requires_grad_(wrt == 'filters')
        inputs = inputs.detach().requires_grad_(wrt == 'input')
        with torch.enable_grad():
            out = adaptive_conv(inputs, filters)
            (grad,) = torch.autograd.grad(out, [inputs if wrt == 'input' else filters], grad_output)
        return grad

    module = types.ModuleType('adaptive_conv_torch')
    module.forward = adaptive_conv

    def grad_input(grad_output, filters):
        _, height, width, taps_h, taps_w = filters.shape
        shape = (*grad_output.shape[:2], height + taps_h - 1, width + taps_w - 1)
        return grads(grad_output, filters, grad_output.new_zeros(shape), 'input')

    def grad_filters(grad_output, inputs):
        taps_h = inputs.shape[2] - grad_output.shape[2] + 1
        taps_w = inputs.shape[3] - grad_output.shape[3] + 1
        shape = (grad_output.shape[0], *grad_output.shape[2:], taps_h, taps_w)
        return grads(grad_output, grad_output.new_zeros(shape), inputs, 'filters')

    module.grad_input = grad_input
    module.grad_filters = grad_filters
    return module


def _compiled_extension(published: Path) -> types.ModuleType:
    from torch.utils.cpp_extension import load

    build = Path('/tmp') / 'featup_adaptive_conv_build'
    build.mkdir(exist_ok=True)
    return load(
        name='adaptive_conv_cpp_impl',
        sources=[str(published / 'featup' / 'adaptive_conv_cuda' / 'adaptive_conv.cpp')],
        build_directory=str(build),
        extra_cflags=['-O2'],
    )


def _inputs(batch, channels, h, w, height, width, seed):
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(batch, channels, h, w, generator=generator)
    image = torch.randn(batch, 3, height, width, generator=generator)
    return image, features


def _run(stack_cls, state_dict, image, features, dtype):
    # linspace in the spatial kernel follows the default dtype: float64 for the reference.
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        model = stack_cls(features.shape[1])
        model.load_state_dict(state_dict)
        model.to(dtype).eval()
        with torch.no_grad():
            return model(features.to(dtype), image.to(dtype))
    finally:
        torch.set_default_dtype(previous)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('published', type=Path, help='extracted FeatUp repository')
    parser.add_argument(
        '--extension', action='store_true', help='also run the published C++ AdaptiveConv'
    )
    parser.add_argument('--output', type=Path, default=OUT, help='where to write (featup.pt)')
    args = parser.parse_args()
    torch_impl = _torch_extension()
    sys.modules['adaptive_conv_cuda_impl'] = torch_impl
    sys.modules['adaptive_conv_cpp_impl'] = torch_impl
    sys.path.insert(0, str(args.published))
    from featup.adaptive_conv_cuda import adaptive_conv as published_adaptive_conv
    from featup.upsamplers import JBUStack

    template = JBUStack(384).state_dict()
    compiled = _compiled_extension(args.published) if args.extension else None
    cases = {}
    for index, (name, spec) in enumerate(CASES.items()):
        batch, channels, h, w, height, width, kept = spec
        image, features = _inputs(batch, channels, h, w, height, width, seed=100 + index)
        state_dict = perturbed_state_dict(JBUStack(channels).state_dict(), SEED)
        expected = _run(JBUStack, state_dict, image, features, torch.float64)
        single = _run(JBUStack, state_dict, image, features, torch.float32)
        errors = golden_errors(single, expected)
        line = f'{name}: output {tuple(expected.shape)}, published float32 vs float64 {errors}'
        if compiled is not None:
            published_adaptive_conv.cpp_impl = compiled
            try:
                with_cpp = _run(JBUStack, state_dict, image, features, torch.float64)
            finally:
                published_adaptive_conv.cpp_impl = torch_impl
            cpp_errors = golden_errors(with_cpp, expected)
            line += f'; C++ AdaptiveConv vs PyTorch (float64) {cpp_errors}'
        print(line)
        cases[name] = {
            'image': image,
            'features': features,
            'output_size': (16 * h, 16 * w),
            'channels': channels,
            'stored_channels': kept,
            'expected': expected[:, :kept].float().contiguous(),
            'published_float32_errors': errors,
        }
    torch.save(
        {
            'seed': SEED,
            'keys': {k: tuple(v.shape) for k, v in template.items()},
            'cases': cases,
        },
        args.output,
    )
    print(f'wrote {args.output} ({args.output.stat().st_size} bytes)')


if __name__ == '__main__':
    main()
