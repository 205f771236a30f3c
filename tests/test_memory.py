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
    with pytest.raises(ValidationError, match=r"unknown memory type 'summary'; expected one of \['BUFFER', 'WINDOW'\]"):
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
