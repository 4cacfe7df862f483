"""Resize and crop arithmetic shared by every pipeline (torchvision's conventions, once).

The probes reproduce torchvision's ``Resize(size)`` and ``CenterCrop(size)``; the tools and the
trainer use the same arithmetic, so an image is cut the same way wherever it is loaded.
"""

from __future__ import annotations

__all__ = ['center_crop_offsets', 'short_side_size']


def short_side_size(height: int, width: int, size: int) -> tuple[int, int]:
    """Returns the (height, width) after resizing the shorter side to ``size``.

    The longer side becomes ``int(size * long / short)`` (truncated), as torchvision's
    ``Resize(size)`` computes it; a square image becomes ``size x size``.

    Args:
        height: Input height.
        width: Input width.
        size: Target length of the shorter side.

    Returns:
        (new_height, new_width).
    """
    if width <= height:
        return int(size * height / width), size
    return size, int(size * width / height)


def center_crop_offsets(height: int, width: int, crop_h: int, crop_w: int) -> tuple[int, int]:
    """Top and left offsets of a centred ``crop_h x crop_w`` window, as torchvision's.

    ``int(round((H - h) / 2))`` (Python's round-half-to-even, like torchvision's
    ``CenterCrop``); negative when the crop is larger than the image (the caller pads).

    Args:
        height: Image height.
        width: Image width.
        crop_h: Crop height.
        crop_w: Crop width.

    Returns:
        (top, left).
    """
    return int(round((height - crop_h) / 2.0)), int(round((width - crop_w) / 2.0))
