"""High-level inference API: load an image, upsample an encoder's features, save the results.

The tools (``tools/upsample.py``) are argument parsing plus calls into this module, so that
the same steps work from a user's script. The PCA visualisation of features (joint PCA to RGB,
side-by-side panels) is here too.
"""

from .inference import (
    UpsampledFeatures,
    image_to_tensor,
    load_image,
    sample_image_path,
    save_upsampled_features,
    upsample_image,
)
from .visualization import (
    PCAProjection,
    compose_panel,
    denormalize_image,
    feature_panel,
    fit_pca,
    joint_pca_rgb,
    to_pil,
)

__all__ = [
    'PCAProjection',
    'UpsampledFeatures',
    'compose_panel',
    'denormalize_image',
    'feature_panel',
    'fit_pca',
    'image_to_tensor',
    'joint_pca_rgb',
    'load_image',
    'sample_image_path',
    'save_upsampled_features',
    'to_pil',
    'upsample_image',
]
