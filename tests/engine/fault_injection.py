"""A model that fails for one chosen token: every run whose real input ids hold `poison` raises.

It raises after onnxruntime has run, so the in-place K/V write of the failed run has happened, as
when a crash comes between the model run and the engine's bookkeeping. It then also fills every
KV cache position at or past each row's length with NaN, as a half-written buffer could hold: the
engine must read none of it before writing it again (a re-run writes a row's tokens at its length).
The real runner and session do all the work.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class InjectedFault(RuntimeError):
    pass


class RecordingBinding:
    """An ORT IOBinding that remembers the input_ids it was given (prefill binds them as arrays)."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.input_ids: np.ndarray | None = None

    def bind_cpu_input(self, name: str, array: np.ndarray) -> None:
        if name == "input_ids":
            self.input_ids = np.asarray(array)
        self.real.bind_cpu_input(name, array)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


class FaultInjector:
    """Installs itself on a loaded runner (after warm-up) and counts the faults it raised.

    Decode runs are judged by the tokens the runner is given (the transformer's decode binding holds
    its ids by pointer, with pad ids in hole rows), prefill runs by the ids they bind or feed.
    """

    def __init__(self, runner: Any, poison: int) -> None:
        self.poison = poison
        self.faults = 0
        self._cache = getattr(runner, "cache", None)  # a transformer's in-place KV cache
        self._decoding_poison = False
        session = runner.session
        real_decode, real_io_binding = runner.decode, session.io_binding
        real_run_binding, real_run = session.run_binding, session.run

        def decode(rows: np.ndarray, tokens: np.ndarray) -> np.ndarray:
            self._decoding_poison = bool(np.isin(poison, tokens))
            try:
                return real_decode(rows, tokens)
            finally:
                self._decoding_poison = False

        def run_binding(binding: Any) -> None:
            recorded = isinstance(binding, RecordingBinding)
            real_run_binding(binding.real if recorded else binding)
            ids = binding.input_ids if recorded else None
            self._fail_if(self._decoding_poison or (ids is not None and bool(np.isin(poison, ids))))

        def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            out = real_run(feeds)
            self._fail_if(bool(np.isin(poison, feeds["input_ids"])))
            return out

        runner.decode = decode
        session.io_binding = lambda: RecordingBinding(real_io_binding())
        session.run_binding = run_binding
        session.run = run

    def _fail_if(self, poisoned: bool) -> None:
        if poisoned:
            self.faults += 1
            self._scribble_past_lengths()
            raise InjectedFault(f"injected fault: token {self.poison} in the batch")

    def _scribble_past_lengths(self) -> None:
        if self._cache is None:
            return
        for buffer in (*self._cache.keys, *self._cache.values):
            assert buffer.host is not None, "the fault injector needs the CPU cache"
            for row, length in enumerate(self._cache.lengths):
                buffer.host[row, :, int(length) :, :] = np.nan
