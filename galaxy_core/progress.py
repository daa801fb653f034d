"""Progress of long work, one convention everywhere: ``progress`` is True (a tqdm bar in the
terminal), False (silent) or a callable ``progress(done, total)`` called as work completes
(the app passes one that moves a progress bar).

Work that runs in stages (hashing a folder's files, then decoding them) reports each stage from
0 again. A callable that also has a method ``phase(desc, total)`` is told when each stage
begins, with the stage's description ("hashing files", "decoding images", ...) and its total,
so that a bar can say what it is counting; a plain callable just sees the counts restart.

    with ProgressBar(progress, total=n, desc="simulating", unit="gal") as bar:
        bar.update(k)

or, over an iterable, ``for item in track(items, progress, desc="decoding"): ...``.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, TypeVar, Union

ProgressFn = Callable[[int, int], None]  #: ``progress(done, total)``
Progress = Union[bool, ProgressFn]
T = TypeVar("T")


class ProgressBar:
    """``update(n)`` and ``close()`` over ``total`` units of work, for any :data:`Progress`;
    also a context manager. ``desc`` names the stage: the tqdm bar's label, and what a
    callable's ``phase`` method (module docstring) is told when the bar starts."""

    def __init__(self, progress: Progress, *, total: int, desc: str = "", unit: str = "it"):
        self.total, self.done = int(total), 0
        self._fn = progress if callable(progress) else None
        self._bar = None
        phase = getattr(self._fn, "phase", None)
        if callable(phase):
            phase(desc, self.total)
        if progress is True:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        if self._fn is not None:
            self._fn(self.done, self.total)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def track(items: Iterable[T], progress: Progress, *, total: int | None = None, desc: str = "",
          unit: str = "it") -> Iterator[T]:
    """Yield ``items``, reporting one unit of progress after each (``total``: ``len(items)`` if not given)."""
    n = len(items) if total is None else total  # type: ignore[arg-type]
    with ProgressBar(progress, total=n, desc=desc, unit=unit) as bar:
        for item in items:
            yield item
            bar.update(1)
