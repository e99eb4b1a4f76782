"""What every monitor returns, spelled as the FeedbackPolicy's status.monitors[] spells it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

OK = "OK"
BREACHED = "Breached"
INSUFFICIENT_DATA = "InsufficientData"
VERDICTS = (OK, BREACHED, INSUFFICIENT_DATA)


@dataclass(frozen=True)
class MonitorResult:
    name: str
    # The monitored value over the window: a rate, a gap or a PSI; None when nothing was seen.
    value: float | None
    verdict: str
    samples: int
    # The window the value covers, as a duration ("1h") or a description ("since start").
    window: str
    # Why, in a sentence: what was compared with what.
    message: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def breached(self) -> bool:
        return self.verdict == BREACHED


def judge(name: str, value: float | None, samples: int, min_samples: int, window: str, breached: bool,
          message: str, details: dict[str, Any] | None = None) -> MonitorResult:
    """A verdict, or InsufficientData when the window holds fewer than `min_samples`."""
    if samples < min_samples or value is None:
        return MonitorResult(name, value, INSUFFICIENT_DATA, samples, window,
                             f"{samples} sample(s) in the window, {min_samples} needed for a verdict", details or {})
    return MonitorResult(name, value, BREACHED if breached else OK, samples, window, message, details or {})
