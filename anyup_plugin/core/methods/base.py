"""What every upsampling method in :mod:`anyup_plugin.core.methods` is: one interface."""

from __future__ import annotations

import operator
import os
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..checkpoints import CheckpointMismatchError, read_checkpoint

__all__ = [
    'UpsamplingMethod',
    'WrongFeaturesError',
    'load_tensors',
    'positive_output_size',
    'read_state_dict',
]

Size = tuple[int, int]


class WrongFeaturesError(ValueError):
    """Features a per-backbone method was not trained for (channels or patch size)."""


class UpsamplingMethod(nn.Module):
    """A feature upsampler: (image, low-resolution features) -> features at any size.

    Subclasses implement :meth:`forward` for one (B, C, h, w) map, and say what they accept
    through the class attributes. The image is always ImageNet-normalised RGB (as
    :class:`~anyup_plugin.core.upsampler.FeatureUpsampler` and AnyUp take it); a method that
    was published with another input convention converts it itself.

    Attributes:
        name: The method key (``'jafar'``), as configs and the command line spell it.
        uses_image: Whether the image guides the upsampling (``False``: it may be ``None``).
        checkpoint_keys_hint: A few state-dict keys that identify this method's checkpoints,
            named in the error when a file of another method is given.
        feature_channels: The channel count the weights were trained for; ``None``: any.
        patch_size: The backbone patch size (image pixels per feature cell) the weights were
            trained for; ``None``: any.
    """

    name: ClassVar[str] = ''
    uses_image: ClassVar[bool] = True
    checkpoint_keys_hint: ClassVar[tuple[str, ...]] = ()
    feature_channels: int | None = None
    patch_size: int | None = None

    def forward(self, image: Tensor | None, features: Tensor, output_size: Size) -> Tensor:
        """Upsamples one map.

        Args:
            image: (B, 3, H, W) ImageNet-normalised RGB guidance (``None`` only when
                ``uses_image`` is ``False``).
            features: (B, C, h, w) low-resolution features.
            output_size: (H', W') of the result.

        Returns:
            (B, C, H', W') upsampled features.
        """
        raise NotImplementedError

    def output_size_for(self, feature_size: Size) -> Size | None:
        """The one output size the method makes from (h, w) features, or ``None``: any size.

        A method with a fixed factor (FeatUp's JBU: 16) overrides this; callers that need
        another size run it at this one and resize (see ``FeatureUpsampler``).
        """
        return None

    def check_features(self, image: Tensor | None, features: Tensor) -> None:
        """Raises :class:`WrongFeaturesError` for features the weights were not trained for.

        The default refuses a channel count other than ``feature_channels`` and, when an image
        is given, an image that is not ``patch_size`` times the feature map (rounded down, as
        a ViT's patch embedding crops). Methods that take any features keep both ``None``.
        """
        if self.feature_channels is not None and features.shape[1] != self.feature_channels:
            raise WrongFeaturesError(
                f'{type(self).__name__} was trained for {self.feature_channels}-channel features, '
                f'got {features.shape[1]} channels (features of shape {tuple(features.shape)}). '
                'Use a checkpoint trained for this backbone, or an encoder-agnostic method '
                "('anyup', 'naf', 'bilinear', 'bicubic', 'guided_filter', 'joint_bilateral')."
            )
        if self.patch_size is not None and image is not None:
            expected = tuple(s // self.patch_size for s in image.shape[-2:])
            if tuple(features.shape[-2:]) != expected:
                raise WrongFeaturesError(
                    f'{type(self).__name__} was trained for a backbone with patch size '
                    f'{self.patch_size}: a {tuple(image.shape[-2:])} image gives {expected} '
                    f'feature maps, got {tuple(features.shape[-2:])}.'
                )

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, **kwargs: Any) -> UpsamplingMethod:
        """Builds the method from a published checkpoint file (strict, published key names)."""
        raise NotImplementedError(f'{cls.__name__} has no weights to load')


def positive_output_size(output_size: Size, what: str) -> tuple[int, int]:
    """``output_size`` as two Python ints, refused with a method's own explanation otherwise.

    Integers of any kind are taken (Python, numpy, 0-d integer tensors); floats, booleans,
    another number of values and sizes below 1 are not.

    Args:
        output_size: (H', W') as given to :meth:`UpsamplingMethod.forward`.
        what: The message's start, saying what the method takes (e.g. ``"JAFAR produces any
            output size (H', W') of two positive integers"``); ``', got <size>'`` follows.

    Returns:
        (H', W').

    Raises:
        ValueError: ``output_size`` is not two positive integers.
    """
    try:
        size = tuple(output_size)
    except TypeError:
        size = ()
    integral = all(hasattr(s, '__index__') and not isinstance(s, bool) for s in size)
    if len(size) != 2 or not integral or not all(operator.index(s) > 0 for s in size):
        raise ValueError(f'{what}, got {output_size!r}')
    return operator.index(size[0]), operator.index(size[1])


def load_tensors(path: str) -> Any:
    """Reads a checkpoint file onto the CPU as tensors and plain containers only.

    ``torch.load(weights_only=True)``: nothing pickled in the file is run. The reader the
    methods give :func:`~anyup_plugin.core.checkpoints.read_checkpoint`.
    """
    return torch.load(path, map_location='cpu', weights_only=True)


def read_state_dict(
    path: str | os.PathLike,
    what: str,
    valid: str,
    where_to_get: str,
    entry: str | None = None,
    load: Callable[[str], Any] = load_tensors,
) -> Mapping[str, Any]:
    """Reads a method's checkpoint file and returns the state dict it holds.

    Args:
        path: The file.
        what: What the file is, for messages (``'NAF checkpoint'``).
        valid: What a valid file is, completing "A valid one is ..." / "expected ...".
        where_to_get: What to do about a missing file.
        entry: The entry a training checkpoint keeps the state dict under (``'state_dict'``);
            taken when the file is a mapping whose ``entry`` is one.
        load: Reads the file (:func:`load_tensors` unless a method explains more).

    Returns:
        The state dict: a mapping with string keys (its values are not checked).

    Raises:
        FileNotFoundError, CheckpointReadError: See
            :func:`~anyup_plugin.core.checkpoints.read_checkpoint`.
        CheckpointMismatchError: The file holds something other than a state dict.
    """
    loaded = read_checkpoint(path, load, what, valid, where_to_get)
    if entry is not None and isinstance(loaded, Mapping) and isinstance(loaded.get(entry), Mapping):
        loaded = loaded[entry]
    if not isinstance(loaded, Mapping) or not all(isinstance(k, str) for k in loaded):
        raise CheckpointMismatchError(
            f'{what} {os.fspath(path)!r} holds a {type(loaded).__name__}, not a state dict; '
            f'expected {valid}.'
        )
    return loaded
