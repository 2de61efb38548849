"""Stop strings for streaming: never emit text that could be the start of a stop string."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StopCheck:
    """Text now safe to emit, and the stop string that ended the sequence (None while it runs)."""

    text: str
    matched: str | None


class StopStringMatcher:
    """Holds back the longest tail that is a prefix of some stop string; truncates at a match.

    The matched stop string itself is not emitted (OpenAI semantics). Text before it is.
    """

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = tuple(s for s in stops if s)
        self._pending = ""
        self._longest = max((len(s) for s in self.stops), default=0)

    def feed(self, delta: str) -> StopCheck:
        if not self.stops:
            return StopCheck(delta, None)
        buffer = self._pending + delta
        hit_at, hit = -1, None
        for stop in self.stops:
            at = buffer.find(stop)
            if at >= 0 and (hit_at < 0 or at < hit_at):
                hit_at, hit = at, stop
        if hit is not None:
            self._pending = ""
            return StopCheck(buffer[:hit_at], hit)
        keep = self._held_tail(buffer)
        self._pending = buffer[len(buffer) - keep :] if keep else ""
        return StopCheck(buffer[: len(buffer) - keep], None)

    def flush(self) -> str:
        """At the end of a sequence that did not stop on a string, the held-back text is real output."""
        text, self._pending = self._pending, ""
        return text

    def _held_tail(self, buffer: str) -> int:
        for keep in range(min(self._longest - 1, len(buffer)), 0, -1):
            tail = buffer[-keep:]
            if any(stop.startswith(tail) for stop in self.stops):
                return keep
        return 0
