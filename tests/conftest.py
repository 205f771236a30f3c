"""Test session setup shared by ``tests/unit`` and ``tests/integration``.

A private, temporary PREFECT_HOME (so the SQLite database is this session's alone) and ``flows/``
on ``sys.path``; the loopback ``openai_server`` / ``pinecone_server`` / ``prefect_server`` fixtures
come from the package's pytest plugin (``pytest_prefect_beluga``). The session's
Prefect API is started only for ``tests/integration`` (see its ``conftest.py``); helpers live in
``prefect_beluga.testing.helpers``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

# Before Prefect is imported: a private home, so the SQLite database is ours alone.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="prefect-beluga-tests-")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

# The `openai_server`, `pinecone_server` and `prefect_server` fixtures come from the package's
# pytest plugin (pytest_prefect_beluga.py, the `pytest11` entry point in pyproject.toml).

# The deployable flows in flows/ are scripts, not a package: make them importable by tests
# (`from rag_ingest import rag_ingest`), as Prefect does when it loads their entrypoints.
FLOWS_DIR = Path(__file__).resolve().parents[1] / "flows"
sys.path.insert(0, str(FLOWS_DIR))
