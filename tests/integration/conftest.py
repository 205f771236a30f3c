"""Integration tests: one temporary Prefect API (SQLite in the session's PREFECT_HOME) for the session.

The harness starts with the first integration test; ``tests/unit`` never waits for it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from prefect.testing.utilities import prefect_test_harness


@pytest.fixture(scope="session", autouse=True)
def prefect_api() -> Iterator[None]:
    """A temporary Prefect server (SQLite in a temp dir) shared by the session."""
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def run_name() -> str:
    """A unique flow run name, to find a run again through the API."""
    return f"test-{uuid.uuid4().hex[:12]}"
