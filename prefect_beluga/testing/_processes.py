"""Subprocess helpers shared by the test servers: free loopback ports and process-group stops."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from typing import Any

__all__ = ["free_port", "signal_group", "stop_process_group"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def stop_process_group(process: subprocess.Popen[Any], timeout: float = 15.0) -> None:
    """SIGTERM a subprocess started with ``start_new_session=True`` and its children; SIGKILL them
    if they are not gone after `timeout` seconds."""
    if process.poll() is None:
        signal_group(process, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            signal_group(process, signal.SIGKILL)
            process.wait(timeout)


def signal_group(process: subprocess.Popen[Any], sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass
