"""Test servers: loopback OpenAI- and Pinecone-protocol servers with fault injection, and a real
`prefect server` (SQLite or a throwaway PostgreSQL, optionally with basic auth).

Every one of them listens on 127.0.0.1 (loopback only) unless given another host.

    ```python
    from prefect_beluga.testing import OpenAIServer, PrefectServer
    with OpenAIServer() as server:
        server.base_url  # 'http://127.0.0.1:.../v1'
    with PrefectServer(database="postgresql", auth_string="admin:pw") as prefect:
        prefect.api_url  # 'http://127.0.0.1:.../api'
    ```
"""

from prefect_beluga.testing.openai_server import Fault, OpenAIServer, RecordedRequest
from prefect_beluga.testing.pinecone_server import PineconeServer
from prefect_beluga.testing.prefect_server import PrefectServer, ThrowawayPostgres

__all__ = ["Fault", "OpenAIServer", "PineconeServer", "PrefectServer", "RecordedRequest", "ThrowawayPostgres"]
