"""pytest's cache of rewritten test modules, written once by a parallel run's controller.

pytest rewrites the asserts of every test module and conftest it imports and keeps the result
in __pycache__ (a hash-checked pyc, so it holds across checkouts). On a fresh clone each
pytest-xdist worker would rewrite all of them at once, some 3 s of CPU apiece, four workers
on two cores; here the controller writes the cache before the workers start, spread over
the cores, and the workers find it. This uses pytest's internal rewrite functions; if they
move, nothing is warmed and the workers rewrite as before.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

_config = None  # the run's config, inherited by the forked rewriters


def _is_rewritten(path: Path) -> bool:
    return path.name == "conftest.py" or (path.name.startswith("test_") and path.suffix == ".py")


def _rewrite(path: Path) -> None:
    from _pytest.assertion.rewrite import (
        PYC_TAIL,
        _rewrite_test,
        _write_pyc,
        assertstate_key,
        get_cache_dir,
        try_makedirs,
    )

    cache_dir = get_cache_dir(path)
    if try_makedirs(cache_dir):
        source_hash, code = _rewrite_test(path, _config)
        _write_pyc(
            _config.stash[assertstate_key], code, source_hash, cache_dir / (path.stem + PYC_TAIL)
        )


def warm(config, folder: Path) -> None:
    global _config
    if sys.dont_write_bytecode:
        return
    try:
        from _pytest.assertion.rewrite import PYC_TAIL, _read_pyc, get_cache_dir
    except ImportError:
        return
    stale = [
        path
        for path in sorted(folder.rglob("*.py"))
        if _is_rewritten(path)
        and _read_pyc(path, get_cache_dir(path) / (path.stem + PYC_TAIL)) is None
    ]
    if not stale:
        return
    _config = config
    with ProcessPoolExecutor(
        max_workers=os.cpu_count() or 1, mp_context=multiprocessing.get_context("fork")
    ) as pool:
        list(pool.map(_rewrite, stale, chunksize=8))
