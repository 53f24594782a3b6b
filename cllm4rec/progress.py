"""Progress of long work: a tqdm bar in a terminal; in a log file (stderr not a terminal) a plain
line at most every CLLM4REC_PROGRESS_EVERY seconds (60 by default), so a log shows a line at least
every minute while work goes on, and nothing for work shorter than that."""
from __future__ import annotations

import os
import sys
import time


def every() -> float:
    return float(os.environ.get("CLLM4REC_PROGRESS_EVERY", 60))


class Progress:
    def __init__(self, total: int, desc: str, unit: str = "it", file=None):
        self.total, self.desc, self.unit = int(total), desc, unit
        self.file = file or sys.stderr
        self.done, self.t0 = 0, time.perf_counter()
        self.last = self.t0
        self.bar = None
        if getattr(self.file, "isatty", lambda: False)():
            from tqdm.auto import tqdm
            self.bar = tqdm(total=self.total, desc=desc, unit=unit, leave=False, file=self.file)

    def update(self, n: int = 1, **info) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            if info:
                self.bar.set_postfix(info, refresh=False)
            return
        now = time.perf_counter()
        if now - self.last >= every():
            self.last = now
            rate = self.done / max(now - self.t0, 1e-9)
            left = (self.total - self.done) / rate if rate > 0 else float("nan")
            extra = "".join(f", {k} {v:.4g}" if isinstance(v, float) else f", {k} {v}" for k, v in info.items())
            print(f"{self.desc}: {self.done}/{self.total} {self.unit} ({100 * self.done / max(self.total, 1):.0f}%)"
                  f"{extra}, {now - self.t0:.0f} s, ~{left:.0f} s left", file=self.file, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
