"""Issue 18's goals next to what this run measured: each bench records its figure here, and
``python -m bench`` ends with one table of them.  A figure, never a test: nothing asserts."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Goal:
    what: str
    measured: float
    unit: str  # "x", "us", "s"
    target: float
    at_least: bool  # True: measured >= target meets it; False: measured <= target

    @property
    def met(self) -> bool:
        return self.measured >= self.target if self.at_least else self.measured <= self.target

    def line(self) -> str:
        sign = ">=" if self.at_least else "<="
        gap = "" if self.met else f"  (gap: {self._gap()})"
        return (f"{self.what:46} {self.measured:9.2f} {self.unit:2}  goal {sign} {self.target:g} {self.unit:2}  "
                f"{'met' if self.met else 'NOT met'}{gap}")

    def _gap(self) -> str:
        if self.unit == "x" and self.measured > 0:
            return f"{self.target / self.measured:.1f}x short"
        return f"{abs(self.measured - self.target):.2f} {self.unit}"


RECORDED: list[Goal] = []


def record(what: str, measured: float, unit: str, target: float, *, at_least: bool) -> None:
    RECORDED.append(Goal(what, measured, unit, target, at_least))


def summary() -> str:
    return "\n".join(g.line() for g in RECORDED)
