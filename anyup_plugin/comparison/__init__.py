"""Compare upsamplers on the paper's probes: one run per method, tables and a figure.

``tools/compare_upsamplers.py`` is the command; :func:`run_comparison` does the work. Needs
MMSegmentation (the probes are its configs) and matplotlib (the figure).
"""

from .benchmarks import BENCHMARKS, Benchmark, Metric, get_benchmark
from .methods import MissingWeightsError, canonical_method, parse_checkpoints
from .paper import PAPER_RESULTS, paper_result
from .report import table_rows, write_tables
from .run import (
    ComparisonOutputs,
    DemoSettings,
    ResultsMismatchError,
    build_method_config,
    run_comparison,
    run_method,
)

__all__ = [
    'BENCHMARKS',
    'PAPER_RESULTS',
    'Benchmark',
    'ComparisonOutputs',
    'DemoSettings',
    'Metric',
    'MissingWeightsError',
    'ResultsMismatchError',
    'build_method_config',
    'canonical_method',
    'get_benchmark',
    'paper_result',
    'parse_checkpoints',
    'run_comparison',
    'run_method',
    'table_rows',
    'write_tables',
]
