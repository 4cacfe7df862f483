"""Shared interface of the upsampling necks: maps in, maps at a stride of the input image out."""

from __future__ import annotations

from collections.abc import Sequence

from mmengine.model import BaseModule
from torch import Tensor

from anyup_plugin.core.input_norm import ToImageNetNorm
from anyup_plugin.core.upsampler import FeatureUpsampler, stride_output_size

__all__ = ['ImageGuidedNeck', 'missing_image_error']


def missing_image_error(neck: str) -> RuntimeError:
    """The error raised when a neck that needs the input image is called without it."""
    return RuntimeError(
        f'{neck} needs the network input image (the guidance, and the output size) but was '
        "called without it: MMSegmentation's EncoderDecoder calls its neck with the backbone "
        "features only. Use model=dict(type='AnyUpEncoderDecoder', ...) in the config, a drop-in "
        'subclass of EncoderDecoder that passes the image to the neck.'
    )


class ImageGuidedNeck(BaseModule):
    """Base of necks that bring backbone maps to a stride of the network input.

    Subclasses set ``self.upsampler``, a :class:`~anyup_plugin.core.FeatureUpsampler` (the
    one upsampling policy shared with the other adapters), which upsamples all selected maps
    in one call. The segmentor calls ``neck(features, image)``; :class:`AnyUpEncoderDecoder`
    does so for every neck with ``takes_image = True``.

    Args:
        in_index: Which backbone maps to upsample (others pass through unchanged); ``None``
            for all of them.
        output_stride: Input pixels per output cell: 1 (the default) upsamples to the input
            size, 4 to a quarter of it, and so on. One value, or one per ``in_index`` entry.
            The output size is ``ceil(H / stride) x ceil(W / stride)``.
        upsample_in_training: If False, maps pass through unchanged in training mode and are
            upsampled only in eval mode (validation/test): the probe then trains on the
            low-resolution features (the feature-preservation protocol).
        input_mean: Mean (RGB, 0-255) the input image was normalised with; by default taken
            from the segmentor's data preprocessor (see ``AnyUpEncoderDecoder``), else
            ImageNet's.
        input_std: Standard deviation (RGB, 0-255), likewise.
        init_cfg: MMEngine init config.
    """

    #: Tells ``AnyUpEncoderDecoder`` to call ``neck(features, image)``.
    takes_image = True

    def __init__(
        self,
        in_index: int | Sequence[int] | None = None,
        output_stride: int | Sequence[int] = 1,
        upsample_in_training: bool = True,
        input_mean: Sequence[float] | None = None,
        input_std: Sequence[float] | None = None,
        init_cfg: dict | None = None,
    ) -> None:
        super().__init__(init_cfg=init_cfg)
        self.in_index = None if in_index is None else _as_list(in_index, 'in_index')
        strides = _as_list(output_stride, 'output_stride')
        if any(s < 1 for s in strides):
            raise ValueError(f'output_stride must be >= 1, got {output_stride!r}')
        if len(strides) > 1 and (self.in_index is None or len(strides) != len(self.in_index)):
            raise ValueError(
                f'output_stride {output_stride!r} gives one stride per level: in_index must list '
                f'as many levels (got {in_index!r})'
            )
        self.output_stride = strides
        self.upsample_in_training = bool(upsample_in_training)
        self.input_norm = ToImageNetNorm(input_mean, input_std)
        self.norm_from_config = input_mean is not None or input_std is not None
        self.upsampler: FeatureUpsampler | None = None  # set by the subclass

    def set_input_normalization(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Sets the statistics (RGB, 0-255 scale) the input image is normalised with."""
        self.input_norm.set_source(mean, std)

    def forward(
        self, inputs: Tensor | Sequence[Tensor], image: Tensor | None = None
    ) -> tuple[Tensor, ...]:
        """Upsamples the selected maps.

        Args:
            inputs: Backbone maps, each (B, C_i, h_i, w_i) (a single tensor is accepted).
            image: (B, 3, H, W) network input, normalised as the data preprocessor does.

        Returns:
            The maps, those selected by ``in_index`` at (B, C_i, ceil(H / s), ceil(W / s)).
        """
        feats = [inputs] if isinstance(inputs, Tensor) else list(inputs)
        if self.training and not self.upsample_in_training:
            return tuple(feats)
        indices = self._indices(len(feats))
        guidance = None if image is None else self.input_norm(image)
        sizes = [
            self._output_size(feats[idx], image, self.output_stride[pos % len(self.output_stride)])
            for pos, idx in enumerate(indices)
        ]
        upsampled = self.upsampler(guidance, [feats[idx] for idx in indices], sizes)
        for idx, out in zip(indices, upsampled):
            feats[idx] = out
        return tuple(feats)

    def _indices(self, num_levels: int) -> list[int]:
        if self.in_index is None:
            return list(range(num_levels))
        for idx in self.in_index:
            if not -num_levels <= idx < num_levels:
                raise IndexError(
                    f'{type(self).__name__}: in_index {idx} is out of range for {num_levels} '
                    'backbone map(s)'
                )
        return [idx % num_levels for idx in self.in_index]

    def _output_size(self, features: Tensor, image: Tensor | None, stride: int) -> tuple[int, int]:
        if image is None:
            raise missing_image_error(type(self).__name__)
        return stride_output_size(image.shape[-2:], stride)


def _as_list(value: int | Sequence[int], name: str) -> list[int]:
    items = [value] if isinstance(value, int) else list(value)
    if not items or not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        raise ValueError(f'{name} must be an int or a non-empty sequence of ints, got {value!r}')
    return items
