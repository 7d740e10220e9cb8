"""What the model libraries print while this package loads a model.

A load that goes as designed shows one INFO line of ours (what was loaded from where), not
the libraries' progress bars, build steps or warnings about a moment of the load:

- transformers draws a "Loading weights" progress bar for every ``from_pretrained``: off
  while a local folder is read (a fraction of a second) and whenever stderr is not a
  terminal (a log keeps every redraw); a download at a terminal keeps its bar.
- open_clip logs each build step on the root logger (INFO), and warns when it builds a
  model without a full CLIP checkpoint ("initialized partially", "initialized randomly").
  For a model whose weights this package loads right after the build (a LiT model: the
  text tower from its own files, the rest from a partial checkpoint), that warning says
  what the model is before our loads, not what it is when loaded. Those records, and only
  those, are dropped while the model is built; open_clip's other warnings and errors pass.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Collection, Iterator
from pathlib import Path


@contextlib.contextmanager
def transformers_progress_bars(show: bool) -> Iterator[None]:
    """transformers' (and huggingface_hub's) progress bars off inside, unless ``show`` and
    stderr is a terminal; their state is restored afterwards."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars  # noqa: PLC0415 - deferred: only a model load needs the model libraries
    from transformers.utils import logging as hf_logging  # noqa: PLC0415 - deferred: only a model load needs the model libraries

    if (show and sys.stderr.isatty()) or not hf_logging.is_progress_bar_enabled():
        yield
        return
    hub_bars_were_off = are_progress_bars_disabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.enable_progress_bar()
        if hub_bars_were_off:
            disable_progress_bars()


class _OpenClipRecords(logging.Filter):
    """Drops open_clip's INFO records and the ``expected`` warnings (exact messages)."""

    def __init__(self, package_dirs: tuple[str, ...], expected: Collection[str]):
        super().__init__()
        self.package_dirs = package_dirs
        self.expected = frozenset(expected)

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.pathname.startswith(self.package_dirs):
            return True
        if record.levelno < logging.WARNING:
            return False
        return record.levelno > logging.WARNING or record.getMessage() not in self.expected


@contextlib.contextmanager
def open_clip_build(expected_warnings: Collection[str] = ()) -> Iterator[None]:
    """While inside: open_clip's build steps (INFO on the root logger) are not logged, nor
    the warnings in ``expected_warnings`` (whole messages), which the caller makes untrue
    by what it loads next. A filter on the root logger sees only the records logged on the
    root logger itself (open_clip's ``logging.info`` and ``logging.warning``), never those
    of named loggers, so no other library's or the project's records are touched."""
    import open_clip  # noqa: PLC0415 - deferred: imports torch/model stacks (seconds), only this path needs them

    package = Path(open_clip.__file__).parent
    dirs = tuple({str(package) + os.sep, str(package.resolve()) + os.sep})
    root = logging.getLogger()
    records = _OpenClipRecords(dirs, expected_warnings)
    root.addFilter(records)
    try:
        yield
    finally:
        root.removeFilter(records)
