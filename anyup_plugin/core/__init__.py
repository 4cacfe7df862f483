"""The framework-free core: the AnyUp model, its building blocks and a frozen timm encoder."""

from .anyup import PUBLISHED_CHECKPOINTS, AnyUp
from .attention import (
    ATTENTION_KERNELS,
    QueryBands,
    dense_window_attention_reference,
    windowed_attention,
)
from .checkpoints import CheckpointMismatchError, CheckpointReadError
from .encoder import FrozenTimmEncoder
from .input_norm import ToImageNetNorm
from .reference import reference_upsample
from .upsampler import UPSAMPLER_METHODS, FeatureUpsampler, build_anyup, stride_output_size

__all__ = [
    'ATTENTION_KERNELS',
    'PUBLISHED_CHECKPOINTS',
    'UPSAMPLER_METHODS',
    'AnyUp',
    'CheckpointMismatchError',
    'CheckpointReadError',
    'FeatureUpsampler',
    'FrozenTimmEncoder',
    'QueryBands',
    'ToImageNetNorm',
    'build_anyup',
    'dense_window_attention_reference',
    'reference_upsample',
    'stride_output_size',
    'windowed_attention',
]
