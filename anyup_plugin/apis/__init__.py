"""High-level inference API: load an image, upsample an encoder's features, save the results.

The tools (``tools/upsample.py``) are argument parsing plus calls into this module, so that
the same steps work from a user's script.
"""

from .inference import (
    UpsampledFeatures,
    image_to_tensor,
    load_image,
    sample_image_path,
    save_upsampled_features,
    upsample_image,
)

__all__ = [
    'UpsampledFeatures',
    'image_to_tensor',
    'load_image',
    'sample_image_path',
    'save_upsampled_features',
    'upsample_image',
]
