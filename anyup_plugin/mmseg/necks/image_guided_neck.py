"""Shared interface of the upsampling necks: maps in, maps at a stride of the input image out."""

from __future__ import annotations

from collections.abc import Sequence

from mmengine.model import BaseModule
from torch import Tensor

from anyup_plugin.core.input_norm import ToImageNetNorm
from anyup_plugin.core.upsampler import FeatureUpsampler, stride_output_size

from .neck_levels import Level, describe_levels, level_map, plan_outputs, with_map

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

    What the neck returns, for n backbone levels, the selected levels I (``in_index``; all n
    when ``None``) and the strides S (``output_stride``):

    * one stride: n levels in the backbone's order, those in I upsampled to that stride, the
      others passed through unchanged;
    * one stride per selected level (len(S) == len(I)): n levels, level I[k] at stride S[k],
      the others passed through; ``output_stride=[4, 8, 16, 32]`` with ``in_index=None`` on
      four ViT maps is what ``MultiLevelNeck`` does;
    * one selected level and several strides: a pyramid of len(S) levels, all from that one
      level, in the order of S; the other backbone levels are dropped. S may hold strides
      coarser than the map's own (stride 32 from a stride-16 map).

    A level given as ``[map, cls_token]`` comes out as the same list/tuple with its map
    upsampled and the token passed through. Settings that do not fit the backbone's output
    fail at the first forward, naming ``neck.in_index``/``neck.output_stride``, the number of
    maps the backbone gave and their shapes.

    Args:
        in_index: Which backbone levels to upsample; ``None`` for all of them.
        output_stride: Input pixels per output cell: 1 (the default) upsamples to the input
            size, 4 to a quarter of it, and so on; one value, one per selected level, or
            several for one selected level (a pyramid). The output size is
            ``ceil(H / stride) x ceil(W / stride)``.
        upsample_in_training: If False, maps pass through unchanged in training mode and are
            upsampled only in eval mode (validation/test): the probe then trains on the
            low-resolution features (the feature-preservation protocol). Not with a pyramid,
            which changes the number of levels the head gets.
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
            raise ValueError(f'neck.output_stride must be >= 1, got {output_stride!r}')
        # Checked here when in_index is known; with in_index=None at the first forward.
        n_selected = None if self.in_index is None else len(self.in_index)
        if n_selected not in (None, 1) and len(strides) not in (1, n_selected):
            raise ValueError(
                f'neck.output_stride={output_stride!r} gives {len(strides)} strides: '
                'neck.in_index must select one level per stride, or one level for a pyramid '
                f'of it (got neck.in_index={in_index!r})'
            )
        self.output_stride = strides
        self.upsample_in_training = bool(upsample_in_training)
        if not self.upsample_in_training and self._is_pyramid(self.in_index):
            raise ValueError(
                'upsample_in_training=False passes the backbone maps through in training, but '
                f'neck.in_index={in_index!r} with neck.output_stride={output_stride!r} makes a '
                'pyramid: the head would get another number of levels in training than in eval'
            )
        self.input_norm = ToImageNetNorm(input_mean, input_std)
        self.norm_from_config = input_mean is not None or input_std is not None
        self.upsampler: FeatureUpsampler | None = None  # set by the subclass

    def set_input_normalization(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Sets the statistics (RGB, 0-255 scale) the input image is normalised with."""
        self.input_norm.set_source(mean, std)

    def forward(self, inputs: Level | Sequence[Level], image: Tensor | None = None) -> tuple:
        """Upsamples the selected maps; see the class docstring for what comes out.

        Args:
            inputs: Backbone levels, each a (B, C_i, h_i, w_i) map or ``[map, cls_token]``
                (a single tensor is accepted as one level).
            image: (B, 3, H, W) network input, normalised as the data preprocessor does.

        Returns:
            The levels, upsampled ones at (B, C_i, ceil(H / s), ceil(W / s)).
        """
        levels = [inputs] if isinstance(inputs, Tensor) else list(inputs)
        owner = type(self).__name__
        maps = [level_map(level, pos, owner) for pos, level in enumerate(levels)]
        plan = plan_outputs(levels, self.in_index, self.output_stride, owner)
        if self.training and not self.upsample_in_training:
            if len(plan) != len(levels):
                raise ValueError(
                    f'{owner}: upsample_in_training=False passes the backbone maps through in '
                    f'training, but neck.output_stride={self.output_stride} makes a pyramid of '
                    f'the one map the backbone gave ({describe_levels(levels)})'
                )
            return tuple(levels)
        jobs = [(idx, stride) for idx, stride in plan if stride is not None]
        guidance = None if image is None else self.input_norm(image)
        sizes = [self._output_size(maps[idx], image, stride) for idx, stride in jobs]
        upsampled = iter(self.upsampler(guidance, [maps[idx] for idx, _ in jobs], sizes))
        return tuple(
            levels[idx] if stride is None else with_map(levels[idx], next(upsampled))
            for idx, stride in plan
        )

    def _is_pyramid(self, in_index: list[int] | None) -> bool:
        return in_index is not None and len(in_index) == 1 and len(self.output_stride) > 1

    def _output_size(self, features: Tensor, image: Tensor | None, stride: int) -> tuple[int, int]:
        if image is None:
            raise missing_image_error(type(self).__name__)
        return stride_output_size(image.shape[-2:], stride)


def _as_list(value: int | Sequence[int], name: str) -> list[int]:
    items = [value] if isinstance(value, int) else list(value)
    if not items or not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        raise ValueError(
            f'neck.{name} must be an int or a non-empty sequence of ints, got {value!r}'
        )
    return items
