"""What every step is given: the provider under test, quick sizes or full ones, a scratch folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class StepFailure(Exception):
    """A step that cannot give its figures; the message is the report's one line of why."""


@dataclass(frozen=True)
class StepContext:
    provider: str  # "cuda" on the GPU machine; "cpu" for the dry run that proves the logic here
    quick: bool
    work: Path

    @property
    def ort_providers(self) -> list[str]:
        if self.provider == "cuda":
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        return ["CPUExecutionProvider"]

    @property
    def threads(self) -> int:
        """Intra-op threads for every system measured: on CUDA the GPU computes, and one thread runs
        what stays on the CPU; the dry run uses two, as bench/engine does on the 2-core machine."""
        return 1 if self.provider == "cuda" else 2
