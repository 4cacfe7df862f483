"""Feature visualisation: joint PCA to RGB and side-by-side panels.

The usual way to look at dense features is to project them on their first three principal
components and show those as RGB. To compare a low-resolution feature map with its upsampled
version, both must go through the *same* projection: :func:`joint_pca_rgb` fits the PCA on one
map (the low-resolution one) and applies it, with the same colour scaling, to all of them.

It lives in ``apis`` (not ``utils``) because it checks its inputs with the core's
:func:`~anyup_plugin.core.checks.check_feature_map`, and ``utils`` sits below the core.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from anyup_plugin.constants import IMAGENET_MEAN, IMAGENET_STD
from anyup_plugin.core.checks import check_feature_map

__all__ = [
    'PCAProjection',
    'compose_panel',
    'denormalize_image',
    'feature_panel',
    'fit_pca',
    'joint_pca_rgb',
    'to_pil',
]


def _as_batched(features: Tensor, name: str) -> Tensor:
    """Accepts (C, h, w) or (B, C, h, w) and returns (B, C, h, w)."""
    if isinstance(features, Tensor) and features.dim() == 3:
        features = features.unsqueeze(0)
    return check_feature_map(features, name)


def _pixels(features: Tensor) -> Tensor:
    """(B, C, h, w) -> (B*h*w, C) in float32."""
    return features.detach().float().permute(0, 2, 3, 1).reshape(-1, features.shape[1])


@dataclass
class PCAProjection:
    """A fitted PCA projection from C feature channels to RGB in [0, 1].

    Attributes:
        mean: (C,) mean of the fitted pixels.
        components: (C, 3) principal directions (zero columns when C < 3), signs fixed so that
            the largest-magnitude loading of each direction is positive.
        low: (3,) value of each projected channel mapped to 0.
        high: (3,) value of each projected channel mapped to 1.
    """

    mean: Tensor
    components: Tensor
    low: Tensor
    high: Tensor

    @property
    def channels(self) -> int:
        """Number of feature channels the projection expects."""
        return int(self.mean.shape[0])

    def project(self, features: Tensor) -> Tensor:
        """Projects features on the principal directions, without scaling.

        Args:
            features: (B, C, h, w) or (C, h, w) feature map with C = :attr:`channels`.

        Returns:
            (B, 3, h, w) float32 scores (batched even if the input was not).
        """
        return self._project(self._check(features))

    def _check(self, features: Tensor) -> Tensor:
        feats = _as_batched(features, 'features')
        if feats.shape[1] != self.channels:
            raise ValueError(
                f'features must have {self.channels} channels (the PCA was fitted on that many), '
                f'got shape {tuple(features.shape)}'
            )
        return feats

    def _project(self, feats: Tensor) -> Tensor:
        batch, _, height, width = feats.shape
        device = feats.device
        scores = (_pixels(feats) - self.mean.to(device)) @ self.components.to(device)
        return scores.reshape(batch, height, width, 3).permute(0, 3, 1, 2)

    def to_rgb(self, features: Tensor) -> Tensor:
        """Maps features to RGB colours in [0, 1] with the fitted projection and scaling.

        Args:
            features: (B, C, h, w) or (C, h, w) feature map with C = :attr:`channels`.

        Returns:
            (B, 3, h, w) float32 RGB in [0, 1].
        """
        return self._to_rgb(self._check(features))

    def _to_rgb(self, feats: Tensor) -> Tensor:
        scores = self._project(feats)
        low = self.low.to(scores.device).view(1, 3, 1, 1)
        high = self.high.to(scores.device).view(1, 3, 1, 1)
        return ((scores - low) / (high - low)).clamp_(0.0, 1.0)


def fit_pca(
    features: Tensor,
    n_components: int = 3,
    quantile: float = 0.01,
    max_samples: int = 65536,
) -> PCAProjection:
    """Fits a PCA to RGB on the pixels of a feature map.

    Args:
        features: (B, C, h, w) or (C, h, w) feature map; every pixel is one sample.
        n_components: Number of principal directions to use, 1 to 3 (unused RGB channels get
            zero directions and show as mid-grey).
        quantile: Fraction of the fitted scores clipped at each end when choosing the colour
            range (robust to outliers); 0 uses the plain min and max.
        max_samples: Pixels used for the fit at most (an evenly spaced subset beyond that).

    Returns:
        The fitted :class:`PCAProjection`.

    Raises:
        ValueError: Bad feature map or arguments.
    """
    feats = _as_batched(features, 'features')
    if not 1 <= n_components <= 3:
        raise ValueError(f'n_components must be 1, 2 or 3, got {n_components}')
    if not 0.0 <= quantile < 0.5:
        raise ValueError(f'quantile must be in [0, 0.5), got {quantile}')
    if max_samples < 1:
        raise ValueError(f'max_samples must be positive, got {max_samples}')
    pixels = _pixels(feats)
    if pixels.shape[0] > max_samples:
        pixels = pixels[torch.linspace(0, pixels.shape[0] - 1, max_samples).long()]
    channels = pixels.shape[1]
    mean = pixels.mean(dim=0)
    centred = pixels - mean
    # Principal directions: top eigenvectors of the (C, C) covariance, in float64 (cheaper than
    # an SVD of the (N, C) data and deterministic, unlike randomised low-rank PCA).
    centred64 = centred.double()
    _, eigvecs = torch.linalg.eigh(centred64.T @ centred64)  # ascending eigenvalues
    k = min(n_components, channels)
    directions = eigvecs[:, -k:].flip(-1).float()  # (C, k), largest variance first
    # Deterministic signs: the largest-magnitude loading of each direction is positive.
    pivot = directions.abs().argmax(dim=0)
    signs = torch.sign(directions[pivot, torch.arange(k)])
    directions = directions * torch.where(signs == 0, torch.ones_like(signs), signs)
    components = torch.zeros(channels, 3, dtype=directions.dtype, device=directions.device)
    components[:, :k] = directions

    scores = centred @ components
    if quantile > 0:
        qs = torch.tensor([quantile, 1.0 - quantile], device=scores.device)
        bounds = torch.quantile(scores, qs, dim=0)
        low, high = bounds[0], bounds[1]
    else:
        low, high = scores.min(dim=0).values, scores.max(dim=0).values
    # Flat directions (or unused channels) map to mid-grey instead of dividing by zero.
    flat = (high - low) <= 1e-12
    low = torch.where(flat, low - 1.0, low)
    high = torch.where(flat, high + 1.0, high)
    return PCAProjection(mean=mean, components=components, low=low, high=high)


def joint_pca_rgb(reference: Tensor, *others: Tensor, quantile: float = 0.01) -> list[Tensor]:
    """Colours several feature maps with one PCA fitted on ``reference``.

    Typical use: ``lowres_rgb, upsampled_rgb = joint_pca_rgb(lowres, upsampled)``. Fitting on
    the low-resolution map and applying the same projection and colour range to the upsampled
    one makes their colours directly comparable.

    Args:
        reference: (B, C, h, w) or (C, h, w) map the PCA is fitted on.
        *others: Further (B', C, h', w') or (C, h', w') maps with the same C.
        quantile: See :func:`fit_pca`.

    Returns:
        One (B, 3, h, w) RGB tensor in [0, 1] per input, reference first.
    """
    ref = _as_batched(reference, 'reference')
    pca = fit_pca(ref, quantile=quantile)
    checked = [pca._check(x) for x in others]
    return [pca._to_rgb(ref)] + [pca._to_rgb(x) for x in checked]


def denormalize_image(
    image: Tensor,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Tensor:
    """Undoes mean/std normalisation.

    Args:
        image: (3, H, W) or (B, 3, H, W) normalised image.
        mean: Per-channel mean used to normalise.
        std: Per-channel standard deviation used to normalise.

    Returns:
        The image in [0, 1] (clamped), same shape, float32.
    """
    if not isinstance(image, Tensor) or image.dim() not in (3, 4) or image.shape[-3] != 3:
        got = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(f'image must be a (3, H, W) or (B, 3, H, W) tensor, got {got}')
    m = torch.as_tensor(mean, dtype=torch.float32, device=image.device).view(3, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32, device=image.device).view(3, 1, 1)
    return (image.detach().float() * s + m).clamp(0.0, 1.0)


def to_pil(rgb: Tensor) -> Image.Image:
    """Converts a (3, H, W) or (1, 3, H, W) RGB tensor in [0, 1] to a PIL image.

    Args:
        rgb: RGB values in [0, 1] (clamped).

    Returns:
        An RGB ``PIL.Image.Image`` of size (W, H).
    """
    if isinstance(rgb, Tensor) and rgb.dim() == 4 and rgb.shape[0] == 1:
        rgb = rgb[0]
    if not isinstance(rgb, Tensor) or rgb.dim() != 3 or rgb.shape[0] != 3:
        got = tuple(rgb.shape) if isinstance(rgb, Tensor) else type(rgb).__name__
        raise ValueError(f'rgb must be a (3, H, W) or (1, 3, H, W) tensor, got {got}')
    array = (rgb.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8)
    return Image.fromarray(np.ascontiguousarray(array.permute(1, 2, 0).cpu().numpy()), 'RGB')


def compose_panel(
    tiles: Sequence[Image.Image],
    size: tuple[int, int] | None = None,
    gap: int = 0,
    background: tuple[int, int, int] = (255, 255, 255),
) -> Image.Image:
    """Places images side by side, each resized (nearest) to one tile size.

    Args:
        tiles: Images, left to right.
        size: (width, height) of each tile; default the first tile's size.
        gap: Pixels of ``background`` between tiles.
        background: RGB colour of the gaps.

    Returns:
        An RGB image of size (n * width + (n - 1) * gap, height).
    """
    if not tiles:
        raise ValueError('tiles must hold at least one image, got none')
    if gap < 0:
        raise ValueError(f'gap must be >= 0, got {gap}')
    width, height = size if size is not None else tiles[0].size
    if width <= 0 or height <= 0:
        raise ValueError(f'size must be positive, got {(width, height)}')
    panel = Image.new('RGB', (len(tiles) * width + (len(tiles) - 1) * gap, height), background)
    for i, tile in enumerate(tiles):
        tile = tile.convert('RGB')
        if tile.size != (width, height):
            tile = tile.resize((width, height), Image.Resampling.NEAREST)
        panel.paste(tile, (i * (width + gap), 0))
    return panel


def feature_panel(
    image: Tensor,
    lowres: Tensor,
    upsampled: Tensor,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    gap: int = 0,
) -> Image.Image:
    """Builds the panel ``image | low-res PCA | upsampled PCA`` for one image.

    The PCA is fitted on ``lowres`` and applied to both maps (see :func:`joint_pca_rgb`). Each
    tile is shown at the image's size; the low-resolution map is enlarged with nearest
    neighbour so its cells stay visible.

    Args:
        image: (3, H, W) or (1, 3, H, W) image normalised with ``mean``/``std``.
        lowres: (C, h, w) or (1, C, h, w) low-resolution features.
        upsampled: (C, H', W') or (1, C, H', W') upsampled features, same C.
        mean: Per-channel mean the image was normalised with.
        std: Per-channel standard deviation the image was normalised with.
        gap: White pixels between tiles.

    Returns:
        An RGB image of size (3 * W + 2 * gap, H).
    """
    rgb_image = denormalize_image(image, mean, std)
    if rgb_image.dim() == 4:
        if rgb_image.shape[0] != 1:
            raise ValueError(f'image must hold one image, got shape {tuple(image.shape)}')
        rgb_image = rgb_image[0]
    low = _as_batched(lowres, 'lowres')
    up = _as_batched(upsampled, 'upsampled')
    if low.shape[0] != 1 or up.shape[0] != 1:
        raise ValueError(
            'lowres and upsampled must hold one feature map each, got shapes '
            f'{tuple(lowres.shape)} and {tuple(upsampled.shape)}'
        )
    if low.shape[1] != up.shape[1]:
        raise ValueError(
            'lowres and upsampled must have the same channels, got shapes '
            f'{tuple(lowres.shape)} and {tuple(upsampled.shape)}'
        )
    pca = fit_pca(low)
    low_rgb, up_rgb = pca._to_rgb(low), pca._to_rgb(up)
    height, width = rgb_image.shape[-2:]
    if tuple(up_rgb.shape[-2:]) != (height, width):
        up_rgb = F.interpolate(up_rgb, size=(height, width), mode='bilinear', align_corners=False)
    tiles = [to_pil(rgb_image), to_pil(low_rgb), to_pil(up_rgb)]
    return compose_panel(tiles, size=(width, height), gap=gap)
