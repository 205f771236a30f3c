"""Loopback servers speaking the OpenAI and Pinecone wire protocols, with fault injection.

    >>> from prefect_beluga.testing import OpenAIServer
    >>> with OpenAIServer() as server:
    ...     server.base_url
    'http://127.0.0.1:.../v1'
"""

from prefect_beluga.testing.openai_server import Fault, OpenAIServer, RecordedRequest
from prefect_beluga.testing.pinecone_server import PineconeServer

__all__ = ["Fault", "OpenAIServer", "PineconeServer", "RecordedRequest"]
