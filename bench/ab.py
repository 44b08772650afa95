"""Interleaved A/B measuring: two sides run in alternating order, round after round, read as medians."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from bench.common import Budget

T = TypeVar("T")


def interleaved(
    rounds: int,
    budget: Budget,
    what: str,
    run_a: Callable[[], T],
    run_b: Callable[[], T],
    after_round: Callable[[int, T, T], None] | None = None,
) -> tuple[list[T], list[T]]:
    """`rounds` rounds of both sides, A B, then B A, and so on: a drift in the machine's load (other
    tenants) favours neither side. The budget is checked before each round (`what` names the rounds in
    its error); `after_round(round_no, a, b)` sees each round's pair. Returns (A results, B results)."""
    side_a: list[T] = []
    side_b: list[T] = []
    for round_no in range(rounds):
        budget.check(what)
        if round_no % 2 == 0:
            a = run_a()
            b = run_b()
        else:
            b = run_b()
            a = run_a()
        side_a.append(a)
        side_b.append(b)
        if after_round is not None:
            after_round(round_no, a, b)
    return side_a, side_b


def median_of(results: Iterable[Any], field: str) -> float:
    """The median of one figure (`rps`, `p50`, `p99`, ...) over load results."""
    return statistics.median(getattr(x, field) for x in results)
