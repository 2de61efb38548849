"""`python -m service` as a real subprocess on free 127.0.0.1 ports, for the API and system tests and
the benchmarks.

The server runs with the service's own defaults: only the ports and the models dir are set here, plus
the SEQSERVE_* settings a caller names. Tests and benchmarks thus run what `make serve` runs.

Start-up is awaited by polling /readyz against a deadline (there is no event a client could await);
every HTTP call made here has a timeout, and `stop()` always reaps the process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
# Generous: on a shared CPU, interpreter start-up alone can take many seconds.
STARTUP_TIMEOUT_S = float(os.environ.get("SEQSERVE_TEST_STARTUP_S", "240"))
STOP_TIMEOUT_S = 60.0


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports: every socket stays bound until all are chosen, so the kernel cannot
    hand the same port out twice (seen with one-at-a-time picks: HTTP and gRPC got one port)."""
    with contextlib.ExitStack() as stack:
        sockets = [
            stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)
        ]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def linked_models(root: Path, models: dict[str, Path]) -> Path:
    """A models folder under `root` whose entries link to existing model folders (nothing copied)."""
    folder = root / "models"
    folder.mkdir(parents=True)
    for name, directory in models.items():
        (folder / name).symlink_to(directory.resolve())
    return folder


class ServerProcess:
    """One service process; `env` holds SEQSERVE_* overrides (limits, key...) by setting name.

    `module` is what `python -m` runs: `service`, or a wrapper such as harness.leaky_service.
    """

    def __init__(
        self, models_dir: Path, log_path: Path, module: str = "service", **env: str | int | float
    ) -> None:
        self.http_port, self.grpc_port = free_ports(2)
        self.log_path = log_path
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("SEQSERVE_")}  # hermetic
        self.env = {
            **inherited,
            "SEQSERVE_MODELS_DIR": str(models_dir),
            "SEQSERVE_HTTP_HOST": "127.0.0.1",
            "SEQSERVE_HTTP_PORT": str(self.http_port),
            "SEQSERVE_GRPC_HOST": "127.0.0.1",
            "SEQSERVE_GRPC_PORT": str(self.grpc_port),
            **{f"SEQSERVE_{k.upper()}": str(v) for k, v in env.items()},
        }
        self.module = module
        self.proc: subprocess.Popen[bytes] | None = None
        self.workers = int(self.env.get("SEQSERVE_WORKERS", "1"))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self) -> ServerProcess:
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module],
            cwd=REPO_ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        return self

    def start_ready(self, timeout: float = STARTUP_TIMEOUT_S) -> ServerProcess:
        """Start and wait for readiness; a server that never gets ready is stopped, not left behind."""
        self.start()
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT_S) -> None:
        """Poll /readyz until 200 (from every worker, with SEQSERVE_WORKERS > 1: each answers for
        itself, and the kernel gives each new connection to one of them); fail fast with the log if
        the process dies."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        ready: set[str] = set()
        # No keep-alive: every poll is a new connection, so every worker gets asked.
        with httpx.Client(timeout=5.0, limits=httpx.Limits(max_keepalive_connections=0)) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
                try:
                    response = client.get(f"{self.url}/readyz")
                    if response.status_code == 200:
                        ready.add(response.headers.get("x-seqserve-worker", "0"))
                        if len(ready) == self.workers:
                            return
                        continue
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        raise TimeoutError(f"server not ready within {timeout}s:\n{self.log()}")

    def terminate(self) -> None:
        """SIGTERM: the graceful drain."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)

    def wait_exit(self, timeout: float = STOP_TIMEOUT_S) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> int | None:
        """Terminate, and kill if the drain does not end in time; returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.terminate()
        try:
            return self.wait_exit()
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
