"""Progress feedback for long loops: a tqdm bar on a terminal, else a plain line every few seconds.

``for item in progress(items, desc="eval"):`` shows a bar on stderr when tqdm is installed (the
``progress`` extra) and stderr is a terminal; in logs, CI and without tqdm it prints
``eval: 120/367 (33 %), 41 s`` at most every ``interval`` seconds (nothing for loops shorter than
that) and a closing line if it printed any. Under ``torch.distributed`` only rank 0 shows progress.
:meth:`Progress.write` prints a message without breaking the bar (warnings during the loop).
"""

from __future__ import annotations

import sys
import time
from typing import Any, Iterable, Iterator, Optional


def _is_main_process() -> bool:
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover
        return True
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _tqdm_class() -> Any:
    if not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm


class Progress:
    """Iterate ``iterable`` while reporting progress on stderr (see the module docstring)."""

    def __init__(self, iterable: Iterable[Any], total: Optional[int] = None, desc: str = "",
                 enabled: bool = True, unit: str = "it", interval: float = 10.0) -> None:
        self.iterable = iterable
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.desc, self.unit, self.interval = total, desc, unit, interval
        self.enabled = enabled and _is_main_process()
        self.count = 0
        self.start = time.monotonic()
        self._last = self.start
        self._printed = False
        self.bar = None
        tqdm = _tqdm_class() if self.enabled else None
        if tqdm is not None:
            self.bar = tqdm(total=total, desc=desc or None, unit=unit, leave=False, dynamic_ncols=True,
                            file=sys.stderr)

    def __iter__(self) -> Iterator[Any]:
        try:
            for item in self.iterable:
                yield item
                self.update()
        finally:
            self.close()

    def update(self, n: int = 1) -> None:
        self.count += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.monotonic()
        if self.enabled and now - self._last >= self.interval:
            self._last = now
            self._printed = True
            print(f"{self.desc or 'progress'}: {self._position()}, {now - self.start:.0f} s", file=sys.stderr, flush=True)

    def _position(self) -> str:
        if self.total:
            return f"{self.count}/{self.total} ({100 * self.count / self.total:.0f} %)"
        return f"{self.count} {self.unit}"

    def write(self, text: str) -> None:
        """Print ``text`` on stderr (above the bar when there is one); shown even when progress is off."""
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self._printed:
            self._printed = False
            print(f"{self.desc or 'progress'}: done, {self._position()} in {time.monotonic() - self.start:.0f} s",
                  file=sys.stderr, flush=True)


def progress(iterable: Iterable[Any], total: Optional[int] = None, desc: str = "", enabled: bool = True,
             unit: str = "it", interval: float = 10.0) -> Progress:
    """A :class:`Progress` over ``iterable``."""
    return Progress(iterable, total, desc, enabled, unit, interval)


__all__ = ["Progress", "progress"]
