"""AnyUp learned feature upsampling for dense prediction.

The core (``anyup_plugin.core``) imports only torch and timm; the MMSegmentation,
Detectron2 and training subpackages import their frameworks only when imported themselves.
"""

from .core import PUBLISHED_CHECKPOINTS, AnyUp, FrozenTimmEncoder

__version__ = '0.1.0'

__all__ = ['PUBLISHED_CHECKPOINTS', 'AnyUp', 'FrozenTimmEncoder', '__version__']
