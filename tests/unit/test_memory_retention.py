"""Memory retention: at most N turns per session, a TTL per session, expiry on access and by prune()."""

from __future__ import annotations

from datetime import timedelta

import fsspec
import pytest

from prefect_beluga import memory
from prefect_beluga.core.errors import ValidationError


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def stores(tmp_path, **retention):
    return {
        "in-memory": memory.InMemoryStore(**retention),
        "file": memory.FileMemoryStore(tmp_path / "files", **retention),
        "shared": memory.SharedMemoryStore(fsspec.filesystem("file"), str(tmp_path / "shared"), **retention),
    }


@pytest.mark.parametrize("kind", ["in-memory", "file", "shared"])
def test_at_most_max_turns_are_kept_oldest_dropped(tmp_path, kind):
    store = stores(tmp_path, max_turns=3)[kind]
    for i in range(5):
        store.append("alice", (f"q{i}", f"a{i}"))
    store.append("bob", ("hi", "hello"))
    assert store.load("alice") == [("q2", "a2"), ("q3", "a3"), ("q4", "a4")]
    assert store.load("bob") == [("hi", "hello")]


@pytest.mark.parametrize("kind", ["in-memory", "file", "shared"])
def test_a_session_expires_ttl_after_its_last_turn_and_is_removed_on_access(tmp_path, kind):
    clock = Clock()
    store = stores(tmp_path, ttl=timedelta(hours=1), clock=clock)[kind]
    store.append("alice", ("q0", "a0"))
    clock.now += 3000
    store.append("alice", ("q1", "a1"))  # a new turn keeps the session alive
    clock.now += 3000
    assert store.load("alice") == [("q0", "a0"), ("q1", "a1")]
    clock.now += 601
    assert store.load("alice") == []
    store.append("alice", ("fresh", "start"))
    assert store.load("alice") == [("fresh", "start")]


@pytest.mark.parametrize("kind", ["in-memory", "file", "shared"])
def test_prune_removes_expired_sessions_only(tmp_path, kind):
    clock = Clock()
    store = stores(tmp_path, ttl=60, clock=clock)[kind]
    store.append("old", ("q", "a"))
    clock.now += 50
    store.append("recent", ("q", "a"))
    clock.now += 20
    assert store.prune() == 1
    assert store.load("recent") == [("q", "a")]
    clock.now -= 20  # "old" is gone for good, not merely hidden by the clock
    assert store.load("old") == []


def test_file_store_prune_deletes_the_files_of_expired_sessions(tmp_path):
    clock = Clock()
    store = memory.FileMemoryStore(tmp_path, ttl=10, clock=clock)
    store.append("old", ("q", "a"))
    clock.now += 11
    assert (tmp_path / "old.json").exists()
    assert store.prune() == 1 and not (tmp_path / "old.json").exists()


def test_file_store_reads_files_written_before_retention_existed(tmp_path):
    (tmp_path / "legacy.json").write_text('[["q", "a"]]')
    store = memory.FileMemoryStore(tmp_path, max_turns=5)
    assert store.load("legacy") == [("q", "a")]
    store.append("legacy", ("q2", "a2"))
    assert store.load("legacy") == [("q", "a"), ("q2", "a2")]


def test_defaults_keep_everything(tmp_path):
    store = memory.FileMemoryStore(tmp_path)
    assert (store.max_turns, store.ttl) == (None, None)
    for i in range(60):
        store.append("s", (str(i), str(i)))
    assert len(store.load("s")) == 60


@pytest.mark.parametrize("option, value", [("max_turns", 0), ("max_turns", 2.5), ("ttl", -1), ("ttl", "1d")])
def test_a_bad_retention_option_is_a_clear_error(tmp_path, option, value):
    with pytest.raises(ValidationError, match=option):
        memory.FileMemoryStore(tmp_path, **{option: value})


def test_window_memory_over_a_store_with_retention(tmp_path):
    store = memory.FileMemoryStore(tmp_path, max_turns=2)
    chat = memory.new_memory("buffer", store=store)
    for i in range(4):
        chat.save_context({"input": f"q{i}", "session_id": "s"}, {"output": f"a{i}"})
    assert chat.load_memory_variables({"session_id": "s"}) == {"history": "Human: q2\nAI: a2\nHuman: q3\nAI: a3"}
