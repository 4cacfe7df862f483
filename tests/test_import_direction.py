"""Imports inside the package run one way: adapters -> core -> constants and utils, never back.

Every ``import`` and ``from ... import`` of every module (at the top or inside a function) is
read with :mod:`ast`, resolved to the part of the package it names (``core``, ``utils``, ...),
and checked against the layering of the README's "Architecture" table.
"""

from __future__ import annotations

import ast
from pathlib import Path

import anyup_plugin

PACKAGE = Path(anyup_plugin.__file__).resolve().parent

# What each part of the package may import from the package (besides itself). The bottom layer
# (constants, the benchmarks' class names, utils) imports nothing above it; the core only
# constants and utils (the benchmarks' class names are the adapters' business); the adapters
# and the trainer build on the core; no adapter imports another.
_BOTTOM = {'constants', 'class_names', 'utils'}
ALLOWED: dict[str, set[str]] = {
    'constants': set(),
    'class_names': set(),
    'utils': {'constants'},
    'core': {'constants', 'utils'},
    'evaluation': _BOTTOM,
    'testing': _BOTTOM | {'evaluation'},
    'apis': _BOTTOM | {'core'},
    'engine': _BOTTOM,
    'training': _BOTTOM | {'core', 'engine'},
    'registry': {'training'},
    'mmseg': _BOTTOM | {'core', 'evaluation'},
    'detectron2': _BOTTOM | {'core', 'evaluation'},
    'comparison': _BOTTOM | {'core', 'apis', 'engine', 'mmseg', 'testing'},
    '__init__': {'core'},
}


def _module_name(path: Path, root: Path) -> list[str]:
    parts = ['anyup_plugin', *path.relative_to(root).with_suffix('').parts]
    return parts[:-1] if parts[-1] == '__init__' else parts


def imported_parts(path: Path, root: Path = PACKAGE) -> set[str]:
    """The parts of ``anyup_plugin`` (``'core'``, ``'utils'``, ...) that ``path`` imports."""
    module = _module_name(path, root)
    package = module if path.name == '__init__.py' else module[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
        if isinstance(node, ast.Import):
            names = [alias.name.split('.') for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = base + (node.module.split('.') if node.module else [])
            # ``from anyup_plugin import engine`` names the part in the imported name.
            names = [target + [alias.name] for alias in node.names]
        else:
            continue
        for name in names:
            if name[0] == 'anyup_plugin' and len(name) > 1:
                found.add(name[1])
    return found


def _part(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def test_every_part_of_the_package_has_a_layer():
    parts = {_part(path) for path in PACKAGE.rglob('*.py')}
    assert parts <= set(ALLOWED), f'add these to ALLOWED: {sorted(parts - set(ALLOWED))}'


def test_imports_only_run_downwards():
    wrong = []
    for path in sorted(PACKAGE.rglob('*.py')):
        part = _part(path)
        upward = imported_parts(path) - ALLOWED[part] - {part}
        if upward:
            wrong.append(f'{path.relative_to(PACKAGE)} imports {sorted(upward)}')
    assert not wrong, 'imports against the layering:\n' + '\n'.join(wrong)


def test_the_checker_sees_relative_absolute_and_function_level_imports(tmp_path):
    # The checker itself: a module that imports upwards in each form is caught.
    fake = tmp_path / 'anyup_plugin'
    (fake / 'utils').mkdir(parents=True)
    source = (
        'from ..core import AnyUp\n'
        'import anyup_plugin.mmseg\n'
        'def f():\n'
        '    from anyup_plugin import training\n'
    )
    (fake / 'utils' / 'bad.py').write_text(source, encoding='utf-8')
    assert imported_parts(fake / 'utils' / 'bad.py', fake) == {'core', 'mmseg', 'training'}
