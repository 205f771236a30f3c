"""The package's pytest plugin (`pytest_prefect_beluga`, the `pytest11` entry point): its
fixtures reach any suite with no import in a conftest, and loading it imports nothing of the
package nor Prefect (Prefect reads PREFECT_HOME once, on first import: a conftest sets it after
plugins load)."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import pytest_prefect_beluga


def test_the_plugin_is_a_pytest11_entry_point_and_pytest_loaded_it(request):
    points = {e.name: e.value for e in importlib.metadata.entry_points(group="pytest11")}
    assert points.get("prefect_beluga") == "pytest_prefect_beluga"
    assert request.config.pluginmanager.get_plugin("prefect_beluga") is pytest_prefect_beluga


def test_its_fixtures_come_with_no_conftest_import(openai_server, pinecone_server):
    assert openai_server.base_url.startswith("http://127.0.0.1:")
    assert pinecone_server.url.startswith("http://127.0.0.1:")


def test_loading_the_plugin_imports_neither_the_package_nor_prefect():
    code = "import sys, pytest_prefect_beluga; print([m for m in ('prefect', 'prefect_beluga') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_the_session_still_has_its_own_prefect_home():
    from prefect.settings import PREFECT_HOME

    assert "prefect-beluga-tests-" in str(PREFECT_HOME.value())  # set by tests/conftest.py, after the plugin loaded
