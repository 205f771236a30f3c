"""prefect-beluga's pytest plugin: the loopback test servers as fixtures.

Installed with the package and loaded by pytest through the ``pytest11`` entry point
(``pyproject.toml``), so any test suite of a project that has prefect-beluga installed can ask
for them by name, with no import in its ``conftest.py``:

- ``openai_server``: a running `prefect_beluga.testing.OpenAIServer` (api key ``"sk-test"``,
  embeddings of dimension 16) for one test;
- ``pinecone_server``: a running `prefect_beluga.testing.PineconeServer` (api key ``"pc-test"``,
  dimension 64) for one test;
- ``prefect_server``: a real ``prefect server`` on loopback shared by one test module, which runs
  once on SQLite and once on a throwaway PostgreSQL (skipped, saying why, where PostgreSQL is not
  installed).

Examples:
    ```python
    from prefect_beluga import llms

    def test_my_step_against_the_loopback_model(openai_server):
        openai_server.reply_with("Prefect runs flows.")
        model = llms.OpenAIChatModel(llms.Config(api_key="sk-test", base_url=openai_server.base_url))
        assert model.generate("What is Prefect?").content == "Prefect runs flows."
    ```

This module sits outside the ``prefect_beluga`` package on purpose, and imports nothing of it (nor
Prefect) until a fixture runs: pytest loads plugins before any ``conftest.py``, and Prefect reads
its settings (``PREFECT_HOME``, the database) once, when it is first imported. A suite that gives
each session its own ``PREFECT_HOME`` in its ``conftest.py`` (as this project's does) still can.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

# The databases `prefect_server` runs a module on (prefect_beluga.testing._postgres.DATABASES,
# repeated here so that collecting tests imports nothing of the package).
DATABASES = ("sqlite", "postgresql")


@pytest.fixture
def openai_server() -> Iterator[Any]:
    """A running `OpenAIServer` (api key "sk-test") for one test."""
    from prefect_beluga.testing.openai_server import OpenAIServer

    with OpenAIServer(api_key="sk-test", dimension=16) as server:
        yield server


@pytest.fixture
def pinecone_server() -> Iterator[Any]:
    """A running `PineconeServer` (api key "pc-test", dimension 64) for one test."""
    from prefect_beluga.testing.pinecone_server import PineconeServer

    with PineconeServer(api_key="pc-test", dimension=64) as server:
        yield server


@pytest.fixture(scope="module", params=DATABASES)
def prefect_server(request: Any) -> Iterator[Any]:
    """A real Prefect server on loopback, shared by one test module; the module runs once on
    SQLite and once on a throwaway PostgreSQL (skipped, saying why, where PostgreSQL is not
    installed)."""
    from prefect_beluga.testing.prefect_server import PrefectServer, postgres_bin_dir

    if request.param == "postgresql" and postgres_bin_dir() is None:
        pytest.skip("PostgreSQL is not installed (apt-get install -y postgresql)")
    with PrefectServer(database=request.param) as server:
        yield server
