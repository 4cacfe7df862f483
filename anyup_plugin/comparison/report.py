"""The comparison table, as Markdown and CSV: measured metrics, time, memory, paper numbers."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from anyup_plugin.utils.io import atomic_write

from .benchmarks import Benchmark
from .paper import PAPER_RESULTS, PAPER_SOURCE

__all__ = ['METHOD_LABELS', 'table_rows', 'write_tables']

#: How the tables name the methods (the paper's spelling).
METHOD_LABELS: dict[str, str] = {
    'anyup': 'AnyUp',
    'bilinear': 'bilinear',
    'bicubic': 'bicubic',
    'featup': 'FeatUp (JBU)',
    'jafar': 'JAFAR',
    'loftup': 'LoftUp',
    'naf': 'NAF',
    'guided_filter': 'guided filter',
    'joint_bilateral': 'joint bilateral',
}

_TIME = 'time_ms_per_image'
_MEMORY = 'peak_memory_mb_per_image'


def _number(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def table_rows(
    benchmark: Benchmark, results: Sequence[Mapping[str, Any]], with_paper: bool = False
) -> tuple[list[str], list[dict[str, float | str | None]]]:
    """The table as CSV column keys and one dict per method (``None``: no value).

    Args:
        benchmark: Whose metrics make the columns.
        results: One result per measured method, as :func:`~.run.run_method` returns it
            (``method``, ``metrics``, ``time_ms_per_image``, ``peak_memory_mb_per_image``).
        with_paper: Add a ``paper_<metric>`` column after each metric, and a row for every
            method of the paper's table that was not measured.

    Returns:
        ``(columns, rows)``: ``method`` first, then each metric (and its paper value), the
        time and memory per image. Measured methods first, in the given order.
    """
    paper = PAPER_RESULTS.get(benchmark.name, {}) if with_paper else {}
    columns = ['method']
    for metric in benchmark.metrics:
        columns.append(metric.key)
        if with_paper:
            columns.append(f'paper_{metric.key}')
    columns += [_TIME, _MEMORY]
    rows = []
    measured = [str(r['method']) for r in results]
    entries: list[tuple[str, Mapping[str, Any] | None]] = [
        (m, r) for m, r in zip(measured, results)
    ]
    entries += [(m, None) for m in paper if m not in measured]
    for method, result in entries:
        row: dict[str, float | str | None] = {'method': method}
        metrics = (result or {}).get('metrics', {})
        for metric in benchmark.metrics:
            row[metric.key] = _number(metrics.get(metric.key))
            if with_paper:
                row[f'paper_{metric.key}'] = _number(paper.get(method, {}).get(metric.key))
        row[_TIME] = _number((result or {}).get(_TIME))
        row[_MEMORY] = _number((result or {}).get(_MEMORY))
        rows.append(row)
    return columns, rows


def _markdown(
    benchmark: Benchmark,
    columns: list[str],
    rows: list[dict],
    notes: Sequence[str],
) -> str:
    digits = {m.key: m.digits for m in benchmark.metrics}
    labels = {}
    for metric in benchmark.metrics:
        arrow = '↑' if metric.higher_is_better else '↓'
        labels[metric.key] = f'{metric.label} {arrow}'
        labels[f'paper_{metric.key}'] = f'{metric.label} (paper)'
        digits[f'paper_{metric.key}'] = metric.digits
    labels.update(
        {'method': 'method', _TIME: 'time / image (ms)', _MEMORY: 'peak memory / image (MiB)'}
    )
    digits.update({_TIME: 1, _MEMORY: 1})

    def cell(key: str, value: Any) -> str:
        if key == 'method':
            return METHOD_LABELS.get(str(value), str(value))
        return '-' if value is None else f'{value:.{digits[key]}f}'

    lines = [f'# Upsampler comparison: {benchmark.name} ({benchmark.task})', '']
    lines += [f'- {note}' for note in notes]
    lines += ['', '| ' + ' | '.join(labels[c] for c in columns) + ' |']
    lines.append('|' + '|'.join(' --- ' for _ in columns) + '|')
    for row in rows:
        lines.append('| ' + ' | '.join(cell(c, row[c]) for c in columns) + ' |')
    return '\n'.join(lines) + '\n'


def write_tables(
    benchmark: Benchmark,
    results: Sequence[Mapping[str, Any]],
    out_dir: str | os.PathLike,
    with_paper: bool = False,
    notes: Sequence[str] = (),
    stem: str = 'comparison',
) -> tuple[Path, Path]:
    """Writes ``<stem>.md`` and ``<stem>.csv`` into ``out_dir`` (each all or nothing).

    The Markdown table names the methods as the paper does and rounds to the paper's
    precision, with ``-`` for a missing value; the CSV holds the full values under the column
    keys of :func:`table_rows`, empty for a missing value.

    Args:
        benchmark: The benchmark the results are for.
        results: One result per measured method (see :func:`table_rows`).
        out_dir: Destination folder (created).
        with_paper: Add the paper's numbers (see :func:`table_rows`).
        notes: Lines printed above the Markdown table (device, how memory was measured, ...).
        stem: File name without suffix.

    Returns:
        The Markdown and CSV paths.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    columns, rows = table_rows(benchmark, results, with_paper)
    notes = list(notes)
    if with_paper:
        notes.append(
            f'paper: {PAPER_SOURCE[benchmark.name]}, DINOv2 ViT-S/14 ("-": not reported; '
            'methods without a paper row are not in its table)'
        )
    md_path, csv_path = out / f'{stem}.md', out / f'{stem}.csv'
    with atomic_write(md_path) as tmp:
        Path(tmp).write_text(_markdown(benchmark, columns, rows, notes), encoding='utf-8')
    with atomic_write(csv_path) as tmp, open(tmp, 'w', newline='', encoding='utf-8') as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: '' if v is None else v for k, v in row.items()})
    return md_path, csv_path
