"""Progress reporting for the library: a silent default and a `tqdm.auto` bar over bytes (notebooks and
terminals) for `progress=True`. The CLI brings its own rich bar."""
from __future__ import annotations

from typing import Any

__all__ = ["Reporter", "TqdmReporter", "choose_reporter"]


class Reporter:
    """Receives progress; the CLI subclasses it with a progress bar. The default ignores everything."""

    def start(self, total_bytes: int, label: str) -> None:
        pass

    def advance(self, nbytes: int) -> None:
        pass

    def warn(self, message: str) -> None:
        pass


class TqdmReporter(Reporter):
    """A `tqdm.auto` bar over bytes (a widget in Jupyter, text elsewhere); warnings through `warnings.warn`.
    The bar closes itself when its total is reached or a new one starts."""

    def __init__(self) -> None:
        self.bar: Any = None

    def start(self, total_bytes: int, label: str) -> None:
        from tqdm.auto import tqdm

        self.close()
        self.bar = tqdm(total=total_bytes, desc=label, unit="B", unit_scale=True, unit_divisor=1024)

    def advance(self, nbytes: int) -> None:
        if self.bar is not None:
            self.bar.update(nbytes)
            if self.bar.total is not None and self.bar.n >= self.bar.total:
                self.close()

    def warn(self, message: str) -> None:
        import warnings

        warnings.warn(message, stacklevel=2)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def choose_reporter(reporter: Reporter | None, progress: bool) -> Reporter:
    """`reporter` when given; else a tqdm bar when `progress`, else silence."""
    if reporter is not None:
        return reporter
    return TqdmReporter() if progress else Reporter()
