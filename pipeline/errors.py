"""Errors for bad input data, and the skip-and-count policy of the stages."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)


class DataError(ValueError):
    """An input file is missing, unreadable or malformed. The message names the file."""

    def __init__(self, path: str | Path, problem: str, kind: str = "invalid"):
        self.path = Path(path)
        self.problem = problem
        self.kind = kind
        super().__init__(f"{path}: {problem}")


class TooManySkipped(RuntimeError):
    """More items were skipped than the stage's ``max_skip_fraction`` allows."""


@dataclass
class SkipPolicy:
    """Skip bad items and count them, or fail on the first one.

    ``on_error='skip'`` logs and counts each :class:`DataError`; :meth:`check` raises
    :class:`TooManySkipped` when the skipped share of ``total`` exceeds
    ``max_skip_fraction``. ``on_error='fail'`` re-raises at once.
    """

    on_error: Literal["skip", "fail"] = "skip"
    max_skip_fraction: float = 0.05
    stage: str = ""
    reasons: Counter = field(default_factory=Counter)
    examples: dict = field(default_factory=dict)

    def handle(self, err: DataError) -> None:
        if self.on_error == "fail":
            raise err
        self.reasons[err.kind] += 1
        self.examples.setdefault(err.kind, str(err))
        log.warning("skipping: %s", err)

    @property
    def skipped(self) -> int:
        return sum(self.reasons.values())

    def check(self, total: int) -> None:
        if total and self.skipped / total > self.max_skip_fraction:
            raise TooManySkipped(
                f"{self.stage or 'stage'}: skipped {self.skipped} of {total} items "
                f"({self.skipped / total:.1%}), above max_skip_fraction={self.max_skip_fraction}; "
                f"reasons: {dict(self.reasons)}; e.g. {next(iter(self.examples.values()), '')}"
            )

    def metrics(self) -> dict:
        return {"skipped": self.skipped, "skipped_reasons": dict(self.reasons)}
