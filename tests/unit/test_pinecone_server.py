"""The loopback Pinecone data-plane server: protocol, limits, counts and fault injection."""

import re
import threading

import httpx
import pytest
from pinecone import Pinecone
from pinecone.errors import ApiError, PayloadTooLargeError

from prefect_beluga.testing import PineconeServer


def unit(dimension, axis, tilt=0.0):
    values = [0.0] * dimension
    values[axis] = 1.0
    values[(axis + 1) % dimension] = tilt
    return values


@pytest.fixture
def server():
    with PineconeServer(api_key="pc-test", dimension=4) as running:
        yield running


@pytest.fixture
def index(server):
    with Pinecone(api_key="pc-test").Index(host=server.url) as index:
        yield index


def test_the_sdk_round_trip(server, index):
    response = index.upsert(vectors=[("a", unit(4, 0), {"genre": "drama", "year": 2020}),
                                     {"id": "b", "values": unit(4, 1), "metadata": {"genre": "comedy"}},
                                     ("c", unit(4, 2))], namespace="films")
    assert response.upserted_count == 3
    result = index.query(vector=unit(4, 0, tilt=0.5), top_k=2, namespace="films", include_metadata=True)
    assert [m.id for m in result.matches] == ["a", "b"] and result.namespace == "films"
    assert result.matches[0].score == pytest.approx(1 / (1.25**0.5)) and result.matches[0].metadata["genre"] == "drama"
    assert result.matches[0].values == []  # not asked for
    with_values = index.query(id="c", top_k=1, namespace="films", include_values=True)
    assert with_values.matches[0].id == "c" and with_values.matches[0].values == unit(4, 2)
    fetched = index.fetch(ids=["a", "zzz"], namespace="films")
    assert list(fetched.vectors) == ["a"] and fetched.vectors["a"].metadata == {"genre": "drama", "year": 2020}
    stats = index.describe_index_stats()
    assert (stats.dimension, stats.total_vector_count, stats.metric) == (4, 3, "cosine")
    assert stats.namespaces["films"].vector_count == 3
    index.update(id="b", set_metadata={"year": 1999}, namespace="films")
    assert index.fetch(ids=["b"], namespace="films").vectors["b"].metadata == {"genre": "comedy", "year": 1999}
    page = index.list_paginated(namespace="films", limit=2)
    assert [v.id for v in page.vectors] == ["a", "b"] and page.pagination.next
    rest = index.list_paginated(namespace="films", limit=2, pagination_token=page.pagination.next)
    assert [v.id for v in rest.vectors] == ["c"] and rest.pagination is None
    index.delete(ids=["a", "never"], namespace="films")
    assert server.vector_count("films") == 2
    index.delete(delete_all=True, namespace="films")
    assert server.vector_count() == 0 and server.namespaces == []


def test_requests_carry_the_sdk_headers_and_are_counted(server, index):
    index.upsert(vectors=[("a", unit(4, 0))])
    index.query(vector=unit(4, 0), top_k=1)
    index.query(vector=unit(4, 1), top_k=1)
    index.describe_index_stats()
    assert server.request_counts == {"/vectors/upsert": 1, "/query": 2, "/describe_index_stats": 1}
    upsert = server.requests_to("/vectors/upsert")[0]
    assert upsert.method == "POST" and upsert.headers["api-key"] == "pc-test"
    assert upsert.headers["x-pinecone-api-version"] and upsert.body == {"vectors": [{"id": "a", "values": unit(4, 0)}]}
    assert server.responses == [
        ("/vectors/upsert", 200),
        ("/query", 200),
        ("/query", 200),
        ("/describe_index_stats", 200),
    ]
    assert index.describe_index_stats().namespaces["__default__"].vector_count == 1  # how Pinecone names ""


def test_metadata_filters(server, index):
    index.upsert(
        vectors=[
            ("a", unit(4, 0), {"genre": "drama", "year": 2019, "tags": ["x", "y"]}),
            ("b", unit(4, 1), {"genre": "comedy", "year": 2021, "tags": ["y"]}),
            ("c", unit(4, 2), {"genre": "drama", "year": 2023}),
        ]
    )

    def ids(filter):
        return sorted(m.id for m in index.query(vector=unit(4, 3), top_k=10, filter=filter).matches)

    assert ids({"genre": "drama"}) == ["a", "c"]
    assert ids({"genre": {"$ne": "drama"}}) == ["b"]
    assert ids({"year": {"$gte": 2020, "$lt": 2023}}) == ["b"]
    assert ids({"tags": {"$in": ["x"]}}) == ["a"]
    assert ids({"tags": {"$exists": False}}) == ["c"]
    assert ids({"$or": [{"genre": "comedy"}, {"year": 2023}]}) == ["b", "c"]
    assert ids({"$and": [{"genre": "drama"}, {"year": {"$lte": 2020}}]}) == ["a"]
    with pytest.raises(ApiError, match="illegal condition for field genre") as raised:
        index.query(vector=unit(4, 3), top_k=10, filter={"genre": {"$regex": "d.*"}})
    assert raised.value.status_code == 400
    index.delete(filter={"genre": "drama"})
    assert sorted(server.vectors()) == ["b"]


@pytest.mark.parametrize(
    "vectors, message",
    [
        ([{"id": "a", "values": [1.0, 0.0]}], "Vector dimension 2 does not match the dimension of the index 4"),
        ([{"id": "a", "values": [1.0, 0.0, 0.0, "x"]}], "vectors\\[1\\]: values must be an array of numbers"),
        (
            [{"id": "a", "values": unit(4, 0), "metadata": {"n": None}}],
            "Metadata value must be a string, number, boolean or list of strings, got null for field 'n' of vector a",
        ),
        ([{"id": "a", "values": unit(4, 0), "metadata": {"n": {"deep": 1}}}], "for field 'n'"),
        ([{"id": "a", "values": unit(4, 0), "metadata": {"n": [1, 2]}}], "for field 'n'"),
        (
            [{"id": "a", "values": unit(4, 0), "metadata": {"text": "x" * 41_000}}],
            "exceeds the limit of 40960 bytes per vector",
        ),
        ([{"id": "", "values": unit(4, 0)}], "vectors\\[1\\].id must be a string of 1 to 512 characters"),
        ([{"id": "i" * 513, "values": unit(4, 0)}], "must be a string of 1 to 512 characters"),
        (
            [{"id": str(i), "values": unit(4, 0)} for i in range(1000)],
            "Too many vectors in one upsert request: 1001; the maximum is 1000",
        ),
    ],
)
def test_pinecone_limits_reject_the_whole_request(vectors, message, server):
    """Sent as raw HTTP: the SDK checks some of these itself before sending."""
    assert (
        raw(server, "POST", "/vectors/upsert", json={"vectors": [{"id": "keep", "values": unit(4, 0)}]}).status_code
        == 200
    )
    reply = raw(server, "POST", "/vectors/upsert", json={"vectors": [{"id": "ok", "values": unit(4, 1)}] + vectors})
    assert reply.status_code == 400 and reply.json()["code"] == 3
    assert re.search(message, reply.json()["message"]), reply.json()
    assert sorted(server.vectors()) == ["keep"]  # nothing of the rejected request was stored


def test_the_sdk_surfaces_server_rejections(server, index):
    with pytest.raises(ApiError, match="Vector dimension 2 does not match the dimension of the index 4") as raised:
        index.upsert(vectors=[("a", [1.0, 0.0])])
    assert raised.value.status_code == 400 and server.vector_count() == 0


def test_requests_over_two_megabytes_are_413(server, index):
    big = [(f"v{i}", unit(4, 0), {"text": "x" * 30_000}) for i in range(80)]  # ~2.4 MB
    with pytest.raises(PayloadTooLargeError) as raised:
        index.upsert(vectors=big)
    assert raised.value.status_code == 413 and server.vector_count() == 0


def raw(server, method, path, **kwargs):
    headers = {"Api-Key": "pc-test", **kwargs.pop("headers", {})}
    return httpx.request(method, server.url + path, headers=headers, timeout=5, **kwargs)


def test_authentication(server):
    assert raw(server, "POST", "/describe_index_stats", json={}).status_code == 200
    wrong = raw(server, "POST", "/describe_index_stats", json={}, headers={"Api-Key": "nope"})
    assert wrong.status_code == 401 and wrong.json() == {"code": 16, "message": "Invalid API Key", "details": []}
    missing = httpx.post(server.url + "/describe_index_stats", json={}, timeout=5)
    assert missing.status_code == 401 and missing.json()["message"] == "Missing API Key"
    with PineconeServer(api_key=None, dimension=4) as open_server:
        assert httpx.post(open_server.url + "/describe_index_stats", json={}, timeout=5).status_code == 200


def test_bad_requests(server):
    assert raw(server, "POST", "/vectors/upsert", content=b"{not json").status_code == 400
    assert raw(server, "POST", "/query", json={"topK": 0, "vector": unit(4, 0)}).status_code == 400
    assert (
        raw(server, "POST", "/query", json={"topK": 1}).json()["message"]
        == "Exactly one of vector or id must be provided"
    )
    assert raw(server, "GET", "/vectors/fetch").status_code == 400
    assert raw(server, "POST", "/vectors/delete", json={"namespace": ""}).status_code == 400
    assert raw(server, "POST", "/nowhere", json={}).status_code == 404
    assert raw(server, "POST", "/vectors/update", json={"id": "ghost", "setMetadata": {"a": 1}}).status_code == 404


def test_fault_queue(server):
    server.fail_next(429, retry_after=3, path="/query")
    server.fail_next(503, times=2)
    server.malformed_next()
    server.drop_next()
    assert server.pending_faults == 5
    first = raw(server, "POST", "/describe_index_stats", json={})  # the 429 waits for a /query
    assert first.status_code == 503 and first.json()["code"] == 14
    limited = raw(server, "POST", "/query", json={"topK": 1, "vector": unit(4, 0)})
    assert limited.status_code == 429 and limited.headers["retry-after"] == "3" and limited.json()["code"] == 8
    assert raw(server, "POST", "/describe_index_stats", json={}).status_code == 503
    malformed = raw(server, "POST", "/describe_index_stats", json={})
    assert malformed.status_code == 200 and malformed.content == b'{"upsertedCount": '
    with pytest.raises(httpx.RemoteProtocolError):
        raw(server, "POST", "/describe_index_stats", json={})
    assert server.pending_faults == 0 and raw(server, "POST", "/describe_index_stats", json={}).status_code == 200
    assert len(server.requests) == 6  # every request is recorded, answered or not
    server.fail_next(500, body={"error": "custom"})
    assert raw(server, "POST", "/describe_index_stats", json={}).json() == {"error": "custom"}


def test_slow_replies_and_dropped_replies_after_the_write(server):
    server.slow_next(30)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.url + "/describe_index_stats", json={}, headers={"Api-Key": "pc-test"}, timeout=0.3)
    server.drop_next(after_apply=True)
    with pytest.raises(httpx.RemoteProtocolError):
        raw(server, "POST", "/vectors/upsert", json={"vectors": [{"id": "a", "values": unit(4, 0)}]})
    assert server.vector_count() == 1  # the write happened; only the reply was lost


def test_concurrent_writers_lose_nothing(server):
    def write(worker):
        with httpx.Client(headers={"Api-Key": "pc-test"}, timeout=10) as client:
            for batch in range(5):
                vectors = [{"id": f"{worker}-{batch}-{i}", "values": unit(4, i % 4)} for i in range(20)]
                assert (
                    client.post(server.url + "/vectors/upsert", json={"vectors": vectors, "namespace": "n"}).status_code
                    == 200
                )

    threads = [threading.Thread(target=write, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert server.vector_count("n") == 600 and server.request_counts["/vectors/upsert"] == 30
    assert 1 <= server.max_in_flight <= 6


def test_reset_and_lifecycle():
    server = PineconeServer(dimension=4)
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.url
    with server:
        port = server.port
        raw(server, "POST", "/vectors/upsert", json={"vectors": [{"id": "a", "values": unit(4, 0)}]})
        server.reset(keep_vectors=True)
        assert server.requests == [] and server.vector_count() == 1
        server.reset()
        assert server.vector_count() == 0
    with pytest.raises(httpx.ConnectError):
        httpx.post(f"http://127.0.0.1:{port}/describe_index_stats", json={}, timeout=2)
    with pytest.raises(ValueError, match="loopback addresses only"):
        PineconeServer(host="0.0.0.0")
    with pytest.raises(ValueError, match="dimension must be an int >= 1"):
        PineconeServer(dimension=0)
