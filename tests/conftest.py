"""Test session setup shared by ``tests/unit`` and ``tests/integration``.

A private, temporary PREFECT_HOME (so the SQLite database is this session's alone), the loopback
``openai_server`` / ``pinecone_server`` fixtures, and ``flows/`` on ``sys.path``. The session's
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

# The loopback OpenAI-compatible server (prefect_beluga.testing), as the `openai_server` fixture.
from prefect_beluga.testing.openai_server import openai_server  # noqa: E402,F401

# The loopback Pinecone data-plane server (prefect_beluga.testing), as the `pinecone_server` fixture.
from prefect_beluga.testing.pinecone_server import pinecone_server  # noqa: E402,F401

# The deployable flows in flows/ are scripts, not a package: make them importable by tests
# (`from rag_ingest import rag_ingest`), as Prefect does when it loads their entrypoints.
FLOWS_DIR = Path(__file__).resolve().parents[1] / "flows"
sys.path.insert(0, str(FLOWS_DIR))
