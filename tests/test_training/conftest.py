"""Shared fixtures of the AnyUp trainer tests: tiny teachers, students and image folders."""

from __future__ import annotations

import pytest
import torch
from torch import nn


class PatchEmbedEncoder(nn.Module):
    """A frozen linear patch embedding: its features of a crop equal its features of the full
    image on the crop's patches exactly (no global context), which makes offsets testable."""

    def __init__(self, patch_size: int = 8, channels: int = 16, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.patch_size = patch_size
        self.proj = nn.Conv2d(3, channels, patch_size, stride=patch_size)
        with torch.no_grad():
            self.proj.weight.copy_(torch.randn(self.proj.weight.shape, generator=gen) * 0.2)
            self.proj.bias.copy_(torch.randn(channels, generator=gen) * 0.1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(images)


@pytest.fixture
def patch_encoder():
    return PatchEmbedEncoder


@pytest.fixture(scope='session')
def demo_folder(tmp_path_factory):
    """48 synthetic images with a short side of 64 px, 4 smaller ones, 2 corrupt files."""
    from anyup_plugin.testing import write_image_folder

    root = tmp_path_factory.mktemp('demo_images')
    write_image_folder(str(root), num_images=48, min_size=64, seed=0, num_small=4, num_corrupt=2)
    return root
