"""Small network helpers for the lab's servers and their tests: free ports and health probes."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

# Health probes go straight to the lab's own servers: a proxy from the environment
# (HTTP_PROXY without a NO_PROXY for loopback) would otherwise swallow them.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the OS picks it; another process may take it later)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(host: str, port: int) -> bool:
    """Whether a server could bind `host:port` now."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        # Servers set SO_REUSEADDR too, so a port in TIME_WAIT counts as free, as it is for them.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


# How long a command waits for a lab server's health answer before it says the stack is not up.
# A server that is not running refuses the connection at once, so this is waited out only by one
# that runs but is slow to answer: Prefect's took over 2 s during a walkthrough on 2 cores (its
# writes stall on SQLite's lock, PrefectHQ/prefect#18934), and the command gave up on a running
# stack.
LAB_PROBE_TIMEOUT_S = 15.0


def http_ok(url: str, timeout: float = LAB_PROBE_TIMEOUT_S) -> bool:
    """Whether GET `url` answers 2xx within `timeout` seconds."""
    try:
        with _DIRECT.open(url, timeout=timeout) as response:
            return 200 <= int(response.status) < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False
