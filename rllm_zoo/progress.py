"""Progress that reads well in a terminal *and* in a piped log.

:func:`progress` returns a :class:`tqdm.auto.tqdm` bar when its output is a terminal (or a Jupyter
kernel's stderr), and otherwise a :class:`PlainProgress`, which writes one plain line at most every
``interval`` seconds and a final line when it finishes: no carriage returns, no ANSI escapes, so a
redirected training log stays readable (``grep``-able, one line per report)::

    epochs: 3/20 (15%) 0:01:12 elapsed, 0:06:48 left, val_auc=0.712 val_acc=0.550

Set ``RLLM_ZOO_PROGRESS`` to ``plain``, ``bar`` or ``off`` to force a mode (``auto``, the default,
picks by the output). Both kinds share the small interface used here: iteration, ``len()``,
``update(n)``, ``set_postfix(**kw)`` / ``set_postfix_str(s)``, ``set_description(s)``,
``write(msg)``, ``close()`` and ``with``.

>>> import sys
>>> for epoch in progress(range(1, 4), desc="epochs", file=sys.stdout, interval=0):
...     pass  # one line per update with interval=0; the default is one every 30 s
epochs: 1/3 (33%) 0:00:00 elapsed, 0:00:00 left
epochs: 2/3 (66%) 0:00:00 elapsed, 0:00:00 left
epochs: 3/3 (100%) 0:00:00 elapsed
>>> with progress(total=3, desc="publish", unit="model", file=sys.stdout) as bar:
...     for name in ["a", "b", "c"]:
...         bar.update(1)
...         bar.set_postfix(last=name)
publish: 3/3 (100%) 0:00:00 elapsed, last=c
"""

from __future__ import annotations

import datetime
import os
import sys
import time
import warnings
from collections.abc import Iterable, Iterator
from typing import IO, Any

__all__ = ["ENV", "PlainProgress", "progress"]

ENV = "RLLM_ZOO_PROGRESS"
_MODES = ("auto", "plain", "bar", "off")


def _isatty(file: IO[str]) -> bool:
    try:
        return bool(file.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty / closed file
        return False


def _in_notebook() -> bool:
    """True inside a Jupyter kernel, where ``tqdm.auto`` draws a widget (its stderr is no TTY)."""
    ipython = sys.modules.get("IPython")
    try:
        return ipython is not None and "IPKernelApp" in ipython.get_ipython().config
    except Exception:
        return False


def _mode() -> str:
    mode = os.environ.get(ENV, "").strip().lower() or "auto"
    if mode not in _MODES:
        warnings.warn(f"{ENV}={mode!r} is not one of {'|'.join(_MODES)}; using auto", stacklevel=3)
        return "auto"
    return mode


def progress(
    iterable: Iterable | None = None,
    *,
    desc: str = "",
    total: int | None = None,
    unit: str = "it",
    leave: bool = True,
    disable: bool = False,
    initial: int = 0,
    file: IO[str] | None = None,
    interval: float = 30.0,
):
    """A tqdm bar on a terminal, plain periodic lines elsewhere (see the module docstring).

    ``file`` defaults to ``sys.stderr``; ``interval`` (seconds) only paces the plain lines.
    ``RLLM_ZOO_PROGRESS=plain|bar|off`` overrides the choice; ``disable=True`` writes nothing.
    """
    mode = _mode()
    stream = sys.stderr if file is None else file
    if mode == "auto":
        mode = "bar" if _isatty(stream) or (file is None and _in_notebook()) else "plain"
    if mode == "bar" and not disable:
        from tqdm.auto import tqdm

        return tqdm(iterable, desc=desc, total=total, unit=unit, leave=leave, initial=initial, file=stream)
    return PlainProgress(
        iterable,
        desc=desc,
        total=total,
        unit=unit,
        leave=leave,
        disable=disable or mode == "off",
        initial=initial,
        file=stream,
        interval=interval,
    )


def _hms(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(max(seconds, 0))))


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value).strip()


class PlainProgress:
    """tqdm's small interface, reporting in plain lines (at most one per ``interval`` s, plus a last one)."""

    def __init__(
        self,
        iterable: Iterable | None = None,
        *,
        desc: str = "",
        total: int | None = None,
        unit: str = "it",
        leave: bool = True,
        disable: bool = False,
        initial: int = 0,
        file: IO[str] | None = None,
        interval: float = 30.0,
    ):
        if total is None and iterable is not None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except (TypeError, AttributeError):
                total = None
        self.iterable = iterable
        self.desc, self.total, self.unit = desc, total, unit
        self.leave, self.disable, self.interval = leave, disable, interval
        self.initial = self.n = initial
        self.file = sys.stderr if file is None else file
        self.postfix = ""
        self.start_t = self._last_t = time.monotonic()
        self._printed: tuple[int, str] | None = None  # (n, postfix) of the last line written
        self._closed = False

    # -- iteration -------------------------------------------------------------------------------
    def __iter__(self) -> Iterator:
        if self.iterable is None:
            raise TypeError("this progress object was made without an iterable")
        if self.disable:
            yield from self.iterable
            return
        try:
            for obj in self.iterable:
                yield obj
                self.update(1)
        finally:  # also on break / an exception in the loop body, like tqdm
            self.close()

    def __len__(self) -> int:
        if self.total is not None:
            return self.total
        if self.iterable is not None and hasattr(self.iterable, "__len__"):
            return len(self.iterable)  # type: ignore[arg-type]
        raise TypeError(f"{type(self).__name__} of unknown length")

    def __bool__(self) -> bool:  # __len__ may raise or be 0: the object itself is always truthy
        return True

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- reporting -------------------------------------------------------------------------------
    def update(self, n: float = 1) -> None:
        self.n += n
        if self.disable or self._closed:
            return
        now = time.monotonic()
        if now - self._last_t >= self.interval:
            self._last_t = now
            self._emit(now)

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs: Any) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = " ".join(f"{k}={_fmt(v)}" for k, v in items.items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = str(s).strip()

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def write(self, s: str, file: IO[str] | None = None, end: str = "\n") -> None:
        """Write a message line (to this object's ``file`` unless told otherwise), even when disabled."""
        out = self.file if file is None else file
        out.write(f"{s}{end}")
        self._flush(out)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.disable or not self.leave:
            return
        if self._printed != (self.n, self.postfix):  # not when the last periodic line said it all
            self._emit(time.monotonic())

    def line(self, now: float | None = None) -> str:
        """The line a report would write now."""
        elapsed = (time.monotonic() if now is None else now) - self.start_t
        n = int(self.n) if float(self.n).is_integer() else self.n
        head = f"{self.desc}: " if self.desc else ""
        if self.total:
            text = f"{head}{n}/{self.total} ({int(100 * self.n / self.total)}%) {_hms(elapsed)} elapsed"
            done = self.n - self.initial
            if 0 < done and self.n < self.total:
                text += f", {_hms(elapsed / done * (self.total - self.n))} left"
        else:
            text = f"{head}{n} {self.unit} {_hms(elapsed)} elapsed"
        return f"{text}, {self.postfix}" if self.postfix else text

    def _emit(self, now: float) -> None:
        self.file.write(self.line(now) + "\n")
        self._flush(self.file)
        self._printed = (self.n, self.postfix)

    @staticmethod
    def _flush(file: IO[str]) -> None:
        flush = getattr(file, "flush", None)
        if flush is not None:
            flush()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.line()!r}>"
