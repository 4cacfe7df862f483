"""The framework-free core: the AnyUp model, its building blocks and a frozen timm encoder."""

from .anyup import PUBLISHED_CHECKPOINTS, AnyUp
from .encoder import FrozenTimmEncoder
from .input_norm import ToImageNetNorm
from .window_attention import dense_window_attention_reference, windowed_attention

__all__ = [
    'PUBLISHED_CHECKPOINTS',
    'AnyUp',
    'FrozenTimmEncoder',
    'ToImageNetNorm',
    'dense_window_attention_reference',
    'windowed_attention',
]
