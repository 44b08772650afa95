"""What every part of the benchmark shares: the app's constants, the setup error, logging,
percentiles and the time budget."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APP_ID = "@organization/appname"
APP_SCOPES = "asset.view account.view account.alert.view?"
ACCOUNT_SCOPES = ["asset.view", "account.view"]
SCOPE_SETS = (None, "asset.view")  # the manifest's required scopes (default) and a narrower set
KEY_PREFIX = "itv"
API_PATH = "/api/asset/v1/assets"  # the simulator's REST resource (answers after the API delay)
HOST = "127.0.0.1"


class SetupError(Exception):
    """The benchmark could not be set up (exit status 2)."""


_T0 = time.monotonic()


def log(message: str) -> None:
    print(f"[{time.monotonic() - _T0:6.1f}s] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 10 else f"{seconds:.1f} s"


def us(seconds: float) -> str:
    """Sub-millisecond figures: two decimals of a millisecond."""
    return f"{seconds * 1000:.2f} ms"


class Budget:
    """Every loop checks it: the whole run is bounded in time, whatever hangs."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def check(self, what: str) -> None:
        if time.monotonic() > self.deadline:
            raise SetupError(f"time budget exhausted during {what}")
