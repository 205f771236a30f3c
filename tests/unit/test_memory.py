"""Conversation memory (prefect_beluga/memory/). Pure logic; test_chain.py checks memory
carried across two chain invocations."""

from __future__ import annotations

import threading

import pytest

from prefect_beluga import ValidationError, memory
from prefect_beluga.memory import BaseMemory, BufferMemory, MemoryType, WindowMemory


def test_buffer_remembers_every_turn():
    buffer = memory.new_memory(MemoryType.BUFFER)
    assert isinstance(buffer, BufferMemory)
    assert buffer.load_memory_variables({}) == {"history": ""}
    buffer.save_context({"input": "hi"}, {"output": "hello"})
    buffer.save_context({"input": "how are you?", "other": 1}, {"output": "fine"})
    assert buffer.turns() == [("hi", "hello"), ("how are you?", "fine")]
    assert buffer.load_memory_variables({}) == {
        "history": "Human: hi\nAI: hello\nHuman: how are you?\nAI: fine"
    }


def test_window_keeps_the_last_k_turns():
    window = memory.new_memory(MemoryType.WINDOW, k=2)
    assert isinstance(window, WindowMemory)
    for i in range(4):
        window.save_context({"input": f"q{i}"}, {"output": f"a{i}"})
    assert window.turns() == [("q2", "a2"), ("q3", "a3")]


@pytest.mark.parametrize("bad", [0, -1, 1.5, "3"])
def test_window_k_must_be_a_positive_int(bad):
    with pytest.raises(ValidationError, match=r"WindowMemory: k must be an int >= 1"):
        WindowMemory(k=bad)


@pytest.mark.parametrize("spelling", [MemoryType.WINDOW, "window", "WINDOW"])
def test_new_memory_accepts_the_enum_or_its_name(spelling):
    assert isinstance(memory.new_memory(spelling), WindowMemory)


def test_new_memory_rejects_an_unknown_type_listing_the_known_ones():
    with pytest.raises(
        ValidationError, match=r"unknown memory type 'summary'; expected one of \['BUFFER', 'WINDOW', 'TOKEN_WINDOW'\]"
    ):
        memory.new_memory("summary")


def test_new_memory_default_is_buffer():
    assert isinstance(memory.new_memory(), BufferMemory)


def test_custom_keys():
    buffer = BufferMemory(memory_key="chat", input_key="question", output_key="answer")
    buffer.save_context({"question": "2+2?"}, {"answer": 4})
    assert buffer.load_memory_variables() == {"chat": "Human: 2+2?\nAI: 4"}


@pytest.mark.parametrize(
    ("inputs", "outputs", "message"),
    [
        ({"question": "q"}, {"output": "a"}, "inputs has no 'input' key (keys: ['question']); set input_key="),
        ({"input": "q"}, {"answer": "a"}, "outputs has no 'output' key (keys: ['answer']); set output_key="),
    ],
)
def test_save_context_names_the_missing_key(inputs, outputs, message):
    buffer = BufferMemory()
    with pytest.raises(ValidationError) as raised:
        buffer.save_context(inputs, outputs)
    assert f"BufferMemory.save_context: {message}" in str(raised.value)
    assert buffer.turns() == []  # nothing half-saved


def test_clear_forgets_everything():
    for kind in MemoryType:
        remembered = memory.new_memory(kind)
        remembered.save_context({"input": "q"}, {"output": "a"})
        remembered.clear()
        assert remembered.turns() == []


def test_concurrent_saves_lose_no_turn():
    buffer = BufferMemory()

    def save(i):
        for j in range(200):
            buffer.save_context({"input": f"{i}-{j}"}, {"output": "a"})

    threads = [threading.Thread(target=save, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(buffer.turns()) == 800


def test_base_memory_is_abstract():
    with pytest.raises(TypeError):
        BaseMemory()  # type: ignore[abstract]


def test_token_window_keeps_the_latest_turns_that_fit():
    from prefect_beluga.memory import TokenWindowMemory
    from prefect_beluga.tokens import count_tokens

    window = memory.new_memory(MemoryType.TOKEN_WINDOW, max_tokens=30)
    assert isinstance(window, TokenWindowMemory)
    for i in range(10):
        window.save_context({"input": f"question number {i} about prefect"}, {"output": f"answer {i}"})
    kept = window.turns()
    assert kept and kept[-1] == ("question number 9 about prefect", "answer 9")
    assert len(kept) < 10
    assert count_tokens(window.load_memory_variables()["history"]) <= 30


def test_sessions_do_not_see_each_other():
    buffer = BufferMemory()
    buffer.save_context({"input": "I am alice", "session_id": "alice"}, {"output": "hi alice"})
    buffer.save_context({"input": "I am bob", "session_id": "bob"}, {"output": "hi bob"})
    assert buffer.load_memory_variables({"session_id": "alice"}) == {"history": "Human: I am alice\nAI: hi alice"}
    assert buffer.turns("bob") == [("I am bob", "hi bob")]
    assert buffer.turns() == []  # the default session is untouched


@pytest.mark.parametrize("bad", ["", "../etc/passwd", "a/b", "x" * 129, 42])
def test_session_ids_are_checked(bad):
    with pytest.raises(ValidationError, match="session_id must be"):
        BufferMemory(session_id=bad)


def test_file_store_persists_across_memory_objects(tmp_path):
    first = memory.new_memory("window", k=2, store=memory.FileMemoryStore(tmp_path), session_id="s1")
    first.save_context({"input": "q1"}, {"output": "a1"})
    first.save_context({"input": "q2"}, {"output": "a2"})
    again = memory.new_memory("window", k=2, store=memory.FileMemoryStore(tmp_path), session_id="s1")
    assert again.turns() == [("q1", "a1"), ("q2", "a2")]
    again.clear()
    assert first.turns() == []


def test_file_store_loses_no_turn_under_concurrent_processes(tmp_path):
    import subprocess
    import sys

    script = (
        "import sys; from prefect_beluga.memory import BufferMemory, FileMemoryStore\n"
        "m = BufferMemory(store=FileMemoryStore(sys.argv[1]), session_id='shared')\n"
        "for j in range(25): m.save_context({'input': sys.argv[2] + str(j)}, {'output': 'a'})\n"
    )
    workers = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path), f"p{i}-"]) for i in range(3)]
    assert all(w.wait(timeout=120) == 0 for w in workers)
    turns = BufferMemory(store=memory.FileMemoryStore(tmp_path), session_id="shared").turns()
    assert len(turns) == 75 and len(set(turns)) == 75


def test_a_corrupt_memory_file_is_a_clear_error(tmp_path):
    (tmp_path / "s.json").write_text("{not json")
    with pytest.raises(ValidationError, match="is not a list of \\[input, output, saved_at\\] items"):
        BufferMemory(store=memory.FileMemoryStore(tmp_path), session_id="s").turns()
