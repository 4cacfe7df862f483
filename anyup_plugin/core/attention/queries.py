"""The attention's queries: maps held as bands of rows, and the per-tile query transform."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ['QUERY_BAND_ELEMENTS', 'QueryBands', 'QueryTransform']

#: ``query_transform(q, out)``: (G, N, D_in) queries -> (G, N, D), into ``out`` unless None.
QueryTransform = Callable[[Tensor, 'Tensor | None'], Tensor]

#: Elements per band of :class:`QueryBands` (32 MiB of float32): small against the map at
#: large sizes, large enough for the convolution to run at its full rate.
QUERY_BAND_ELEMENTS = 2**23


class QueryBands:
    """A (B, H', W', D) query map held as bands of whole rows, released front to back.

    The attention walks the output rows top to bottom; with the queries in bands it drops each
    band once past it, while the output fills up, so the two never exist in full at once (at
    1024 px and 384 channels that is 0.5 of 2 GiB).

    Args:
        bands: (B, rows_i, W', D) tensors, in row order.
    """

    def __init__(self, bands: Sequence[Tensor]) -> None:
        if not bands:
            raise ValueError('QueryBands needs at least one band')
        self._bands = list(bands)
        self._starts = [0]
        for band in self._bands:
            self._starts.append(self._starts[-1] + band.shape[1])
        batch, _, width, dim = self._bands[0].shape
        self.shape = torch.Size((batch, self._starts[-1], width, dim))
        self.device, self.dtype = self._bands[0].device, self._bands[0].dtype
        self.requires_grad = any(b.requires_grad for b in self._bands)

    @classmethod
    def convolve(
        cls, queries: Tensor, conv: nn.Conv2d, band_elements: int | None = None
    ) -> QueryBands:
        """``conv(queries)`` band by band: (B, D_in, H', W') -> bands of (B, rows, W', D).

        Each band reads its rows plus the convolution's halo, zero-padded at the map's top
        and bottom exactly as the convolution's own padding.

        Args:
            queries: (B, D_in, H', W') map.
            conv: A stride-1, zero-padded convolution that keeps the size.
            band_elements: Output elements per band (at least one row); default
                :data:`QUERY_BAND_ELEMENTS`.
        """
        same_size = tuple(k // 2 for k in conv.kernel_size)
        if (
            conv.stride != (1, 1)
            or conv.dilation != (1, 1)
            or conv.padding_mode != 'zeros'
            or conv.padding != same_size
        ):
            raise ValueError(
                'QueryBands.convolve needs a stride-1, zero-padded convolution that keeps the '
                f'size, got {conv}'
            )
        batch, _, height, width = queries.shape
        halo = conv.padding[0]
        band_elements = QUERY_BAND_ELEMENTS if band_elements is None else band_elements
        rows = max(1, band_elements // (batch * width * conv.out_channels))
        bands = []
        for r0 in range(0, height, rows):
            r1 = min(r0 + rows, height)
            lo, hi = max(r0 - halo, 0), min(r1 + halo, height)
            # Rows missing at the map's top or bottom come from the convolution's own zero
            # padding (a padded copy of the band would be a fresh allocation); the padding is
            # symmetric, so surplus output rows are cut off.
            missing_top, missing_bottom = lo - (r0 - halo), (r1 + halo) - hi
            pad = max(missing_top, missing_bottom)
            band = queries[:, :, lo:hi].contiguous(memory_format=torch.channels_last)
            out = F.conv2d(band, conv.weight, conv.bias, padding=(pad, conv.padding[1]))
            first = pad - missing_top
            bands.append(out.permute(0, 2, 3, 1)[:, first : first + r1 - r0].contiguous())
        return cls(bands)

    def rows(self, start: int, end: int, out: Tensor | None = None) -> Tensor:
        """(B, end - start, W', D) rows [start, end): a view when inside one band.

        Rows across bands are concatenated, into ``out`` ((B, end - start, W', D)) if given.
        """
        first = bisect.bisect_right(self._starts, start) - 1
        last = bisect.bisect_left(self._starts, end) - 1
        pieces = []
        for i in range(first, last + 1):
            band = self._bands[i]
            if band is None:
                raise RuntimeError(f'query rows {start}-{end} were already released')
            b0 = self._starts[i]
            pieces.append(band[:, max(start - b0, 0) : min(end, self._starts[i + 1]) - b0])
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=1, out=out)

    def release_before(self, row: int) -> None:
        """Drops every band that ends at or before ``row``."""
        for i, band_end in enumerate(self._starts[1:]):
            if band_end <= row:
                self._bands[i] = None

    def copy(self) -> QueryBands:
        """Another handle on the same bands, whose releases leave this one intact."""
        return QueryBands(self._bands)

    def to_tensor(self) -> Tensor:
        """The whole (B, H', W', D) map (all bands must still be held)."""
        return self.rows(0, self.shape[1])
