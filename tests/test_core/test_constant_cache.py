"""Shape constants: cached per arguments, normal tensors, device tables without host data."""

from __future__ import annotations

import random

import pytest
import torch

from anyup_plugin.core.constant_cache import device_table, shape_constant
from anyup_plugin.core.kernel_count import OpCounter


@pytest.mark.parametrize('dtype', [torch.int32, torch.long])
def test_device_table_equals_torch_tensor_without_host_data(dtype):
    rng = random.Random(0)
    cases = [[], [5], [3, 3], [0, 1, 2, 7, 7, 7, 6, 4, 2, 9], [0, 0, 0, 1, 2, 3, 4, 4]]
    cases += [sorted(rng.randint(-9, 60) for _ in range(rng.randint(1, 40))) for _ in range(50)]
    cases += [[rng.randint(-9, 9) for _ in range(rng.randint(1, 40))] for _ in range(50)]
    for values in cases:
        with OpCounter() as ops:
            table = device_table(values, 'cpu', dtype)
        assert table.dtype == dtype and table.tolist() == values
        assert ops.ops['lift_fresh'] == 0, values


def test_device_table_writes_one_run_per_arithmetic_progression():
    # Runs: 0 0 0 | 1 2 3 4 | 9 7 5 3 | 8 8: four writes.
    with OpCounter() as ops:
        device_table([0, 0, 0, 1, 2, 3, 4, 9, 7, 5, 3, 8, 8], 'cpu')
    assert (ops.ops['fill_'], ops.ops['arange']) == (2, 2)


def test_shape_constant_builds_once_per_arguments_outside_inference_mode():
    built = []

    @shape_constant(maxsize=4)
    def ramp(n: int) -> torch.Tensor:
        built.append(n)
        return torch.arange(n, dtype=torch.float32)

    with torch.inference_mode():
        first = ramp(3)
    assert ramp(3) is first and ramp(4) is not first
    assert built == [3, 4]
    # Usable by a later call with autograd: not an inference tensor.
    assert not first.is_inference()
    weight = torch.ones(3, requires_grad=True)
    (first * weight).sum().backward()
    assert weight.grad.tolist() == [0.0, 1.0, 2.0]
