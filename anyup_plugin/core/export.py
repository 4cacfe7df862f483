"""Exports AnyUp at fixed input shapes: ``torch.export`` programs (.pt2) and ONNX files.

The forward has no data-dependent control flow (window layouts and tiles follow from the
shapes alone; the NaN checks are skipped while tracing), so it exports as one graph:

    >>> program = export_program(model, (1, 3, 448, 448), [(1, 384, 32, 32)])
    >>> save_export(model, 'anyup.onnx', (1, 3, 448, 448), [(1, 384, 32, 32)])

ONNX export needs the ``export`` extra (``onnx``, ``onnxscript``; ``onnxruntime`` to run it).

ONNX files compute what eager PyTorch does to float32 rounding. ``GroupNorm`` needs help for
that: PyTorch's exporter writes it as ``InstanceNormalization`` over each group flattened, and
ONNX Runtime's CPU kernel (like its ``ReduceMean``) sums such a row of ``d / groups * H * W``
numbers (800 000 at 224 px) in float32 with 100x PyTorch's error (6e-6 of the output against
6e-8). Measured against float64 at 224 px, the exported encoders' outputs were off by 2e-5 and
AnyUp's output by 1.4e-4 (eager PyTorch: 4e-7 and 5e-5). :func:`group_norm_by_axes` replaces
``GroupNorm`` in ONNX exports with the same statistics reduced one axis at a time (rows of at
most ``max(d / groups, H, W)`` numbers), which ONNX Runtime computes as accurately as PyTorch.
(The feature unification's channel mean is summed in blocks while tracing, for the same reason:
see ``LearnedFeatureUnification``.) With both, ONNX Runtime's output at 224 px is 2.6e-5 off
float64, closer than eager float32 (4.9e-5, which the model's conditioning sets).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from .anyup import AnyUp

__all__ = [
    'EXPORT_FORMATS',
    'FixedSizeAnyUp',
    'example_inputs',
    'export_program',
    'group_norm_by_axes',
    'onnx_program',
    'save_export',
]

logger = logging.getLogger(__name__)

#: File suffixes :func:`save_export` writes, and what each holds.
EXPORT_FORMATS: dict[str, str] = {
    '.onnx': 'ONNX model (torch.onnx.export with dynamo=True)',
    '.pt2': 'torch.export program (torch.export.save)',
}

Shape = Sequence[int]


class FixedSizeAnyUp(nn.Module):
    """AnyUp with its output sizes fixed, taking the image and the maps as plain tensors.

    Args:
        model: The AnyUp model (put it in eval mode first).
        output_size: As ``AnyUp.forward``'s ``output_size`` (one size, or one per map).

    Shapes:
        ``forward(image, *features)``: image (B, 3, H, W), each map (B, C_i, h_i, w_i) ->
        one (B, C, H', W') tensor for one map, a tuple of them for several.
    """

    def __init__(self, model: AnyUp, output_size: object = None) -> None:
        super().__init__()
        self.model = model
        self.output_size = output_size

    def forward(self, image: Tensor, *features: Tensor) -> Tensor | tuple[Tensor, ...]:
        outputs = self.model(image, list(features), self.output_size)
        # Contiguous outputs: exported graphs and ONNX runtimes return dense arrays anyway.
        outputs = tuple(out.contiguous() for out in outputs)
        return outputs[0] if len(outputs) == 1 else outputs


def example_inputs(
    image_shape: Shape, feature_shapes: Sequence[Shape], seed: int = 0
) -> tuple[Tensor, ...]:
    """Random float32 (image, *features) of the given shapes, for tracing."""
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(*image_shape, generator=g),
        *(torch.randn(*s, generator=g) for s in feature_shapes),
    )


def export_program(
    model: AnyUp,
    image_shape: Shape,
    feature_shapes: Sequence[Shape],
    output_size: object = None,
) -> torch.export.ExportedProgram:
    """``torch.export`` of the model at fixed shapes, inference mode.

    Args:
        model: The model (its weights become the program's parameters).
        image_shape: (B, 3, H, W).
        feature_shapes: (B, C_i, h_i, w_i) of every map.
        output_size: One size for all maps or one per map; default the image size.

    Returns:
        The exported program; ``program.module()(image, *features)`` runs it.
    """
    wrapper = FixedSizeAnyUp(model.eval(), output_size).eval()
    with torch.no_grad():
        return torch.export.export(wrapper, example_inputs(image_shape, feature_shapes))


def group_norm_by_axes(
    input: Tensor,
    num_groups: int,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
    cudnn_enabled: bool = True,
) -> Tensor:
    """``F.group_norm`` with its statistics reduced one axis at a time (``aten.group_norm``).

    The mean of each group's ``(d / groups, H, W)`` block is the mean over W, then H, then the
    group's channels; likewise the variance of the centred values (two passes, as PyTorch's
    kernel). A runtime that sums each reduced row in float32 one element after another then
    adds at most ``max(d / groups, H, W)`` numbers per sum instead of their product.

    Args:
        input: (B, C, *spatial).
        num_groups: Groups (divides C).
        weight, bias: (C,) affine parameters, or None.
        eps: Added to the variance.
        cudnn_enabled: Ignored (part of the ATen signature).

    Returns:
        (B, C, *spatial), equal to ``F.group_norm(input, num_groups, weight, bias, eps)``.
    """
    batch, channels = input.shape[:2]
    grouped = input.reshape(batch, num_groups, channels // num_groups, *input.shape[2:])

    def mean(x: Tensor) -> Tensor:
        for dim in range(x.dim() - 1, 1, -1):
            x = x.mean(dim, keepdim=True)
        return x

    centred = grouped - mean(grouped)
    out = (centred * torch.rsqrt(mean(centred.square()) + eps)).reshape(input.shape)
    per_channel = (1, channels) + (1,) * (input.dim() - 2)
    if weight is not None:
        out = out * weight.reshape(per_channel)
    if bias is not None:
        out = out + bias.reshape(per_channel)
    return out


#: Decompositions applied to the exported program before its translation to ONNX (see the
#: module's docstring).
ONNX_DECOMPOSITIONS = {torch.ops.aten.group_norm.default: group_norm_by_axes}


def onnx_program(
    module: nn.Module, inputs: tuple[Tensor, ...], **export_kwargs: object
) -> torch.onnx.ONNXProgram:
    """``module`` at these inputs' shapes as an ONNX program, in inference mode.

    ``torch.export``, then :data:`ONNX_DECOMPOSITIONS`, then ``torch.onnx.export``
    (``dynamo=True``) of the resulting program.

    Args:
        module: The module to export (in eval mode).
        inputs: Example inputs.
        **export_kwargs: Passed to ``torch.onnx.export`` (``input_names``, ``optimize`` ...).

    Returns:
        The ONNX program; ``.save(path)`` writes it.
    """
    with torch.no_grad():
        program = torch.export.export(module, inputs)
        program = program.run_decompositions(ONNX_DECOMPOSITIONS)
        return torch.onnx.export(program, inputs, dynamo=True, **export_kwargs)


def save_export(
    model: AnyUp,
    path: str | os.PathLike,
    image_shape: Shape,
    feature_shapes: Sequence[Shape],
    output_size: object = None,
    optimize: bool = True,
) -> Path:
    """Writes an ONNX file or a ``.pt2`` program, chosen by ``path``'s suffix.

    Args:
        model: The model.
        path: Ends in one of :data:`EXPORT_FORMATS`.
        image_shape: (B, 3, H, W).
        feature_shapes: (B, C_i, h_i, w_i) of every map.
        output_size: One size for all maps or one per map; default the image size.
        optimize: ONNX only: run the exporter's graph optimisation (constant folding,
            redundant-op removal); ``False`` exports faster.

    Returns:
        The path written. ONNX inputs are named ``image``, ``features_0``, ...
    """
    path = Path(path)
    if path.suffix not in EXPORT_FORMATS:
        raise ValueError(
            f'export path must end in one of {", ".join(EXPORT_FORMATS)}, got {str(path)!r}'
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == '.pt2':
        torch.export.save(export_program(model, image_shape, feature_shapes, output_size), path)
    else:
        wrapper = FixedSizeAnyUp(model.eval(), output_size).eval()
        names = ['image', *(f'features_{i}' for i in range(len(feature_shapes)))]
        outputs = [f'upsampled_{i}' for i in range(len(feature_shapes))]
        program = onnx_program(
            wrapper,
            example_inputs(image_shape, feature_shapes),
            input_names=names,
            output_names=outputs,
            optimize=optimize,
        )
        program.save(str(path))
    logger.info('wrote %s (%s)', path, EXPORT_FORMATS[path.suffix])
    return path
