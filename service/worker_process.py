"""What a worker started by the supervisor (SEQSERVE_WORKERS > 1) does beyond serving: it learns its
index from the environment, tags its log lines with it, ends with its supervisor, and takes its
share of the cores.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys

from service.settings import Settings

# Set by the supervisor for each worker it starts; their absence means "not a worker".
WORKER_INDEX_ENV = "SEQSERVE_WORKER_INDEX"
SUPERVISOR_PID_ENV = "SEQSERVE_SUPERVISOR_PID"
_PR_SET_PDEATHSIG = 1  # linux/prctl.h

log = logging.getLogger("seqserve")


def worker_index() -> int | None:
    """This process's index among the workers, or None when it is not a supervised worker."""
    value = os.environ.get(WORKER_INDEX_ENV)
    return int(value) if value is not None else None


class _WorkerField(logging.Filter):
    """Adds `worker=<index>` to every record's fields: N processes write to one stream."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def filter(self, record: logging.LogRecord) -> bool:
        record.fields = {**(getattr(record, "fields", None) or {}), "worker": self.index}
        return True


def become_worker(index: int) -> None:
    """Call once, after logging is set up and before serving."""
    for handler in logging.getLogger().handlers:
        handler.addFilter(_WorkerField(index))
    _end_with_supervisor()


def worker_settings(settings: Settings) -> Settings:
    """With ORT threads on auto (0), a worker takes its share of the cores, less one for its event
    loop: each worker sees every core of the pod, and N workers each taking all of them would run N
    times too many threads. Explicit values, and CUDA (one launching thread), stay as they are."""
    if settings.intra_op_threads or settings.provider != "cpu":
        return settings
    from service.engine.capacity import usable_cores  # the engine's own rule for one process

    share = max(1, usable_cores() // settings.workers - 1)
    return settings.model_copy(update={"intra_op_threads": share})


def _end_with_supervisor() -> None:
    """Ask Linux for a SIGTERM (a drain) when the supervisor dies, e.g. by SIGKILL, so that no worker
    outlives it holding the ports. The workers run in their own process group (a terminal's Ctrl-C
    reaches the supervisor only, which forwards it once), so nothing else would tell them."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        log.warning("could not ask to be stopped with the supervisor (errno %d)", ctypes.get_errno())
    supervisor = os.environ.get(SUPERVISOR_PID_ENV)
    if supervisor is not None and os.getppid() != int(supervisor):  # it died before the prctl
        os.kill(os.getpid(), signal.SIGTERM)
