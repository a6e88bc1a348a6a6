"""Progress bars that warnings do not break.

A warning printed while a ``tqdm`` bar is drawn lands in the middle of the bar's line and the
bar is redrawn under the garbage. :func:`progress_bar` routes every warning shown while the bar
is open through ``tqdm.write``, which prints it on its own line above the bar.

Example:
    >>> import warnings
    >>> with progress_bar(total=3, desc="demo", disable=True) as bar:
    ...     warnings.warn("printed above the bar, never inside its line")
    ...     bar.update(3)
"""
from __future__ import annotations

import contextlib
import sys
import warnings
from typing import Iterator

from tqdm.auto import tqdm


@contextlib.contextmanager
def progress_bar(**options) -> Iterator[tqdm]:
    """A ``tqdm`` bar (on stderr unless ``file`` is given; ``options`` go to ``tqdm``) for the ``with`` block.

    While it is open, warnings are written with ``tqdm.write`` (above the bar) instead of into its
    line; the previous ``warnings.showwarning`` is restored and the bar closed on exit.
    """
    options.setdefault("file", sys.stderr)
    options.setdefault("dynamic_ncols", True)
    bar = tqdm(**options)
    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        text = warnings.formatwarning(message, category, filename, lineno, line).rstrip("\n")
        tqdm.write(text, file=file or sys.stderr)

    warnings.showwarning = show
    try:
        yield bar
    finally:
        warnings.showwarning = previous
        bar.close()
