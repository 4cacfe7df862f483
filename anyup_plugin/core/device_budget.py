"""How much of the forward outside the attention runs at once, per kind of device.

On the CPU, work is chunked so that each chunk stays in a core's cache: many small operations
cost little there. On CUDA every operation is a kernel launch (several microseconds each,
plus Python dispatch), so the same chunks would make a forward of thousands of launches: the
feature unification and the encoders then run on whole maps, as far as a budget of the
memory the device has available allows.

:func:`device_profile` picks the sizes of a device; :func:`forced_device_profile` makes every
device use one kind's sizes for a while (tests count the operations of the CUDA sizing on
CPU tensors with it). The CPU values are the cache-sized ones the CPU path was tuned with;
changing them changes its speed.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

import torch

from .checks import available_memory_bytes, is_tracing

__all__ = [
    'ACCELERATOR_WORKSPACE_FRACTION',
    'ACCELERATOR_PROFILE',
    'CPU_PROFILE',
    'ENCODER_MODULE_MAPS',
    'ENCODER_MODULE_MEMORY_FRACTION',
    'PROFILE_KINDS',
    'DeviceProfile',
    'device_profile',
    'forced_device_profile',
    'reads_host_values',
]

#: Share of the device's available memory (free plus cached by PyTorch but unused) one
#: workspace of the feature unification or the encoders may take on an accelerator: the
#: output, the queries and the attention's tiles need the rest.
ACCELERATOR_WORKSPACE_FRACTION = 0.25

#: Working maps of (d, H, W) the encoder modules hold at once at their peak (the rotated
#: image encoding, one block's input, its two intermediates and output, the other encoder's
#: map, pooling), with margin: the modules run on whole maps only when this many fit in
#: :data:`ENCODER_MODULE_MEMORY_FRACTION` of the available memory.
ENCODER_MODULE_MAPS = 8

#: Share of the available memory the encoder modules' whole maps may take: they are dead
#: before the output is written.
ENCODER_MODULE_MEMORY_FRACTION = 0.5

#: Upper bound of the accelerator chunks of the feature unification, in elements: 2**28
#: float32 responses (1 GiB) cover 73 x 73 features of 384 channels in two chunks.
_ACCELERATOR_MAX_CHUNK_ELEMENTS = 2**28


@dataclasses.dataclass(frozen=True)
class DeviceProfile:
    """Sizes of the chunked work outside the attention on one kind of device.

    Attributes:
        kind: ``'cpu'`` (cache-sized chunks) or ``'accelerator'`` (whole maps within a
            memory budget).
        lfu_chunk_elements: Responses (pixels x C x d) the feature unification computes at once;
            ``None``: within the memory budget of the device (see :meth:`chunk_elements`).
        lfu_patch_elements: Neighbourhood patch elements (pixels x C x k x k) it unfolds at
            once; ``None``: within the memory budget.
        encoder_chunk_tokens: Pixels per chunk of the fused encoder path (see
            :mod:`anyup_plugin.core.fused_encoder`).
        encoder_modules_when_they_fit: Run the encoder modules on whole maps (a few dozen
            kernels) instead of the fused, chunked path when
            :data:`ENCODER_MODULE_MAPS` working maps fit in the memory budget.
        query_band_elements: Output elements per band of the convolved queries
            (:class:`~anyup_plugin.core.attention.QueryBands`); ``None``: the whole map
            within the memory budget.
        reads_host_values: Whether the forward may read tensor values on the host (a
            softmax bound, the finite check's verdict): free on the CPU, a synchronisation
            on an accelerator. Only CPU tensors ever read them; forcing the accelerator
            profile on CPU tensors therefore takes CUDA's synchronisation-free path.
    """

    kind: str
    lfu_chunk_elements: int | None
    lfu_patch_elements: int | None
    encoder_chunk_tokens: int
    encoder_modules_when_they_fit: bool
    query_band_elements: int | None
    reads_host_values: bool

    def chunk_elements(self, fixed: int | None, device: torch.device, element_size: int) -> int:
        """Elements one workspace of ``element_size`` bytes may hold: ``fixed``, else the budget.

        The budget is :data:`ACCELERATOR_WORKSPACE_FRACTION` of the memory available on
        ``device`` (free plus cached but unused), at most 2**28 elements; at least 1.
        """
        if fixed is not None:
            return fixed
        available = _available_bytes(device)
        if available is None:
            return _ACCELERATOR_MAX_CHUNK_ELEMENTS
        budget = int(available * ACCELERATOR_WORKSPACE_FRACTION) // element_size
        return max(1, min(_ACCELERATOR_MAX_CHUNK_ELEMENTS, budget))

    def encoder_modules_fit(
        self, device: torch.device, map_elements: int, element_size: int
    ) -> bool:
        """Whether the encoder modules run on whole maps of ``map_elements`` (B x d x H x W)."""
        if not self.encoder_modules_when_they_fit:
            return False
        available = _available_bytes(device)
        if available is None:
            return True
        budget = available * ENCODER_MODULE_MEMORY_FRACTION
        return ENCODER_MODULE_MAPS * map_elements * element_size <= budget


#: The CPU's sizes: 2**18 responses (1 MiB) keep a chunk's responses and their exponentials
#: in a core's L2 cache through the softmax's passes, while the matrix product that makes them
#: still has thousands of rows; 2**22 patch elements (16 MiB) bound that copy at any C and
#: image width; 4096 encoder tokens x d = 128 float32 is 2 MiB, so a chunk and its products
#: stay in cache between the normalisation, SiLU, matrix product and statistics; query bands
#: of 2**23 elements (32 MiB) are small against the map at large sizes (the attention frees
#: them as it passes) and large enough for the convolution to run at its full rate.
CPU_PROFILE = DeviceProfile(
    kind='cpu',
    lfu_chunk_elements=2**18,
    lfu_patch_elements=2**22,
    encoder_chunk_tokens=4096,
    encoder_modules_when_they_fit=False,
    query_band_elements=2**23,
    reads_host_values=True,
)

#: CUDA and other accelerators: whole maps within the memory budget. The fused encoder path
#: (for images whose module maps do not fit) runs chunks of 2**17 tokens, large enough to fill
#: the device; the queries are convolved in one band (four at 448 px on the CPU's sizes,
#: each a few launches) unless memory is short.
ACCELERATOR_PROFILE = DeviceProfile(
    kind='accelerator',
    lfu_chunk_elements=None,
    lfu_patch_elements=None,
    encoder_chunk_tokens=1 << 17,
    encoder_modules_when_they_fit=True,
    query_band_elements=None,
    reads_host_values=False,
)

#: The profiles by kind.
PROFILE_KINDS: dict[str, DeviceProfile] = {p.kind: p for p in (CPU_PROFILE, ACCELERATOR_PROFILE)}

#: The profiles :func:`forced_device_profile` imposes, innermost last, with the memory it
#: makes the budgets count (None: the device's): a plain global (not a context variable) so
#: that ``torch.compile`` reads it without a graph break.
_forced: list[tuple[DeviceProfile, int | None]] = []


def device_profile(device: torch.device) -> DeviceProfile:
    """The sizes for work on ``device``: the CPU's on the CPU, whole maps elsewhere.

    Inside :func:`forced_device_profile`, the forced one for every device.
    """
    if _forced:
        return _forced[-1][0]
    return CPU_PROFILE if device.type == 'cpu' else ACCELERATOR_PROFILE


def _available_bytes(device: torch.device) -> int | None:
    """The memory the budgets count as available on ``device`` (None: unknown)."""
    if _forced and _forced[-1][1] is not None:
        return _forced[-1][1]
    # Traced code runs elsewhere, later: no memory reading in the graph.
    return None if is_tracing() else available_memory_bytes(device)


def reads_host_values(device: torch.device) -> bool:
    """Whether the forward reads values of tensors on ``device`` on the host.

    Only on the CPU, and there not under ``forced_device_profile('accelerator')``, which then
    counts the operations of CUDA's synchronisation-free path (see
    :attr:`DeviceProfile.reads_host_values`).
    """
    return device.type == 'cpu' and device_profile(device).reads_host_values


@contextlib.contextmanager
def forced_device_profile(kind: str, available_bytes: int | None = None) -> Iterator[DeviceProfile]:
    """Uses the sizes of ``kind`` (``'cpu'`` or ``'accelerator'``) on every device for a while.

    ``available_bytes``, if given, is the memory the budgets count as available on every
    device (e.g. a GPU's, so that counts do not depend on the machine running them).

    For measurements: e.g. counting the operations a CUDA forward dispatches with CPU tensors.
    Not thread-safe: meant for one measuring thread. The sizes change, and so does whether
    values are read on the host (:func:`reads_host_values`): CPU tensors under the
    accelerator profile take CUDA's path without host reads (softmax bounds are not used,
    the finite check is an assertion). What needs a CUDA device itself (memory readings,
    TF32 settings) still follows the tensors' device.
    """
    if kind not in PROFILE_KINDS:
        raise ValueError(f'kind must be one of {tuple(PROFILE_KINDS)}, got {kind!r}')
    _forced.append((PROFILE_KINDS[kind], available_bytes))
    try:
        yield PROFILE_KINDS[kind]
    finally:
        _forced.pop()
