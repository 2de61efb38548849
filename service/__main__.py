"""`python -m service`: REST and gRPC in one process, configured by SEQSERVE_* environment variables."""

from __future__ import annotations

import sys

import uvloop
from pydantic import ValidationError

from service.api.server import serve
from service.logging_setup import setup_logging
from service.settings import load_settings


def main() -> int:
    try:
        settings = load_settings()
    except ValidationError as exc:
        print(f"invalid SEQSERVE_* settings:\n{exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_format)
    sys.setswitchinterval(settings.gil_switch_interval_ms / 1000.0)
    # uvloop: the event loop's own work per streamed token (socket writes, callbacks) costs less.
    return uvloop.run(serve(settings))


if __name__ == "__main__":
    sys.exit(main())
