"""Progress: a bar on a terminal; off a terminal (a file, a CI log, ``nohup``), a plain line every
:data:`LOG_EVERY` seconds with the count, the rate and the time left, so long work is never silent."""

from __future__ import annotations

import os
import sys
import time

from tqdm import tqdm

LOG_EVERY = 60.0  # seconds between progress lines when stderr is not a terminal


class _Progress(tqdm):
    """tqdm that, where it would be silent (``disable=None`` and stderr not a terminal), counts
    quietly and logs a line now and then instead; ``disable=True`` stays silent."""

    def __init__(self, *args, **kwargs):
        logged = kwargs.get("disable", None) is None and not sys.stderr.isatty()
        if logged:
            kwargs.update(disable=False, file=open(os.devnull, "w"))  # noqa: SIM115: closed in close()
        kwargs.setdefault("dynamic_ncols", True)
        self._logged, self._last_line = logged, time.monotonic()
        super().__init__(*args, **kwargs)

    def _log_line(self) -> None:
        now = time.monotonic()
        if not self._logged or now - self._last_line < LOG_EVERY:
            return
        self._last_line = now
        d = self.format_dict
        rate = d["n"] / d["elapsed"] if d["elapsed"] else 0  # the run's mean: a log line is read alone
        unit = d["unit"]
        done = f"{d['n']}/{d['total']} {unit}" if d["total"] else f"{d['n']} {unit}"
        left = (f", about {self.format_interval((d['total'] - d['n']) / rate)} left"
                if d["total"] and rate else "")
        extra = f" ({d['postfix']})" if d.get("postfix") else ""
        print(f"{d['prefix'] or 'progress'}: {done}, {rate:.3g} {unit}/s, {self.format_interval(d['elapsed'])} "
              f"elapsed{left}{extra}", file=sys.stderr, flush=True)

    def update(self, n=1):
        shown = super().update(n)
        self._log_line()
        return shown

    def __iter__(self):
        if not self._logged:
            yield from super().__iter__()
            return
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def close(self):
        file = self.fp if self._logged else None
        super().close()
        if file is not None:
            file.close()


progress = _Progress
