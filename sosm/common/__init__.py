"""The leaf every room may import: helpers shared by several rooms, defined once (``sosm.common``).

It imports nothing else of ours (a test parses every import to hold that), so ``sosm.graph`` and
``sosm.kernels`` can both use it without importing each other (docs/ARCHITECTURE.md, "Layers").

| module | what it holds |
|---|---|
| :mod:`~sosm.common.blocks` | the table of the 16 MU semantic blocks, the state widths |
| :mod:`~sosm.common.configs` | config validation: unknown keys, renamed keys, range checks |
| :mod:`~sosm.common.files` | crash-safe (atomic) file writes |
| :mod:`~sosm.common.features` | similarity features, candidate masks, sinusoidal positions (needs torch) |
| :mod:`~sosm.common.native` | compile-on-first-use of the native CPU code (standard library only) |

This package's ``__init__`` re-exports the standard-library-only names; ``features`` and
``native`` are imported from their modules.
"""
from .blocks import (BLOCK_DIM, BLOCK_NAMES, DEFAULT_BLOCK_WEIGHTS, N_BLOCKS, SEMANTIC_DIM, TEMPORAL_DIM,
                     block_index, block_slice)
from .configs import check, is_int, is_number, reject_unknown_keys, rename_keys
from .files import atomic_dir, atomic_path, atomic_write, fsync_dir, write_synced

__all__ = ["BLOCK_DIM", "BLOCK_NAMES", "DEFAULT_BLOCK_WEIGHTS", "N_BLOCKS", "SEMANTIC_DIM", "TEMPORAL_DIM",
           "block_index", "block_slice", "check", "is_int", "is_number", "reject_unknown_keys", "rename_keys",
           "atomic_dir", "atomic_path", "atomic_write", "fsync_dir", "write_synced"]
