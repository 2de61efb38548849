"""`python -m harness.leaky_service`: `python -m service` with a deliberate leak of LEAK_BYTES per API
request, so that the leak check of the load test (tests/system/test_load.py) is shown to fail on a
leak of the size it claims to catch.

The leak is added from outside, by wrapping `InferenceCore.begin` (every REST and gRPC request passes
through it) before the service starts: the service itself carries no test hook on its serving path.
"""

from __future__ import annotations

import sys

from service.__main__ import main
from service.api.core import InferenceCore

LEAK_BYTES = 10_000  # the "10 KB per request"
_kept: list[bytearray] = []
_begin = InferenceCore.begin


def leaking_begin(self: InferenceCore, *args: object, **kwargs: object) -> object:
    """The real `begin`, after keeping LEAK_BYTES of touched memory alive for good."""
    _kept.append(bytearray(b"\x01" * LEAK_BYTES))
    return _begin(self, *args, **kwargs)


if __name__ == "__main__":
    InferenceCore.begin = leaking_begin  # type: ignore[method-assign]
    sys.exit(main())
