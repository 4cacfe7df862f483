"""tools/export.py: writes a torch.export program that loads and runs at the given sizes.

The formats and the error for an unknown suffix are save_export's, checked in
tests/test_core/test_export.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]


def test_writes_a_program_for_the_given_sizes(tmp_path):
    out = tmp_path / 'anyup.pt2'
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / 'tools' / 'export.py'),
            str(out),
            '--random-weights',
            '--image-size',
            '14',
            '21',
            '--features',
            '3',
            '1',
            '2',
            '--output-size',
            '7',
            '7',
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    program = torch.export.load(out)
    result = program.module()(torch.randn(1, 3, 14, 21), torch.randn(1, 3, 1, 2))
    assert result.shape == (1, 3, 7, 7)
