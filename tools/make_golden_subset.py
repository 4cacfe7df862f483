"""Copies the published model's reference outputs into the test data, small enough to commit.

The reference file (``shared/golden/anyup_reference.pt``, outputs of the published
implementation in float64 on perturbed weights) is not shipped with the project; this tool
keeps its state dict and every case, storing for large cases only every k-th output channel
(the output is ``attention @ features``, so each channel is checked independently while the
model still sees all input channels).

Usage: python tools/make_golden_subset.py SRC DST [--max-case-mb 0.5]
"""

from __future__ import annotations

import argparse
import math

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src')
    parser.add_argument('dst')
    parser.add_argument('--max-case-mb', type=float, default=0.5)
    args = parser.parse_args()
    ref = torch.load(args.src, weights_only=True)
    cases = []
    for case in ref['cases']:
        expected = case['expected']
        channels = expected.shape[1]
        step = max(
            1, math.ceil(expected.element_size() * expected.numel() / 2**20 / args.max_case_mb)
        )
        index = torch.arange(0, channels, step)
        cases.append({**case, 'expected': expected[:, index].clone(), 'channel_index': index})
        print(f'case {tuple(expected.shape)}: keeping {len(index)} of {channels} channels')
    torch.save({'state_dict': ref['state_dict'], 'config': ref['config'], 'cases': cases}, args.dst)


if __name__ == '__main__':
    main()
