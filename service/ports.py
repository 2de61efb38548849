"""The listening ports that SEQSERVE_WORKERS > 1 processes share.

Each worker binds its own socket with SO_REUSEPORT and the kernel spreads new connections over
them; gRPC does the same through its `grpc.so_reuseport` option. Any process of the same user that
sets SO_REUSEPORT could join such a group, so the supervisor first makes sure that nothing listens
on the ports at all (`ensure_free`), and a second server on the same ports fails as it does with
one worker.
"""

from __future__ import annotations

import socket


def _family(host: str, port: int) -> socket.AddressFamily:
    """IPv4 or IPv6, as the host resolves for a listening socket ("0.0.0.0", "::", a name)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    return infos[0][0]


def shared_listener(host: str, port: int, backlog: int) -> socket.socket:
    """A listening TCP socket on host:port that other workers' sockets may share (SO_REUSEPORT)."""
    return socket.create_server((host, port), family=_family(host, port), backlog=backlog, reuse_port=True)


def ensure_free(host: str, port: int) -> None:
    """Raise OSError if anything listens on host:port, shared (SO_REUSEPORT) or not."""
    with socket.socket(_family(host, port), socket.SOCK_STREAM) as probe:
        # SO_REUSEADDR only: connections of an earlier run in TIME_WAIT do not count, listeners do.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
