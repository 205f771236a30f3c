"""Private Prefect attributes used outside the runtime go through `_prefect_internals`, with a fallback."""

from __future__ import annotations

import warnings

import prefect
import pytest
from prefect.filesystems import LocalFileSystem, RemoteFileSystem

from prefect_beluga.memory_blocks import memory_store_from_block
from prefect_beluga.orchestration import _prefect_internals as internals


@pytest.fixture
def without_resolve_path(monkeypatch):
    """A Prefect whose filesystem blocks have no `_resolve_path` (renamed in some release)."""
    monkeypatch.setattr(internals, "RESOLVE_PATH_ATTR", "_no_such_resolver")
    internals.reset_warnings()
    yield
    internals.reset_warnings()


@pytest.mark.parametrize(
    "block",
    [
        lambda tmp: LocalFileSystem(basepath=str(tmp)),
        lambda tmp: RemoteFileSystem(basepath=f"memory://{tmp.name}/base/"),
    ],
    ids=["local", "remote"],
)
def test_memory_block_root_is_the_same_without_prefects_resolver(block, tmp_path, request):
    made = block(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", internals.PrefectInternalsWarning)
        expected = memory_store_from_block(made).root
    request.getfixturevalue("without_resolve_path")
    with pytest.warns(internals.PrefectInternalsWarning) as caught:
        fallback = memory_store_from_block(made).root
        again = memory_store_from_block(made).root
    assert fallback == again == expected
    assert expected.endswith("beluga-memory")
    assert len(caught) == 1  # one warning, naming the Prefect version
    assert f"Prefect {prefect.__version__}" in str(caught[0].message)
    assert "_no_such_resolver" in str(caught[0].message)
