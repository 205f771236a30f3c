"""Vector stores: the base class, the embedded numpy store (the default) and Pinecone.

    ```python
    from prefect_beluga.vectorstores import InMemoryVectorStore, PineconeVectorStore
    ```
"""

from prefect_beluga.vectorstores.base import Filter, VectorStore, document_id
from prefect_beluga.vectorstores.inmemory import InMemoryVectorStore
from prefect_beluga.vectorstores.pinecone import PineconeVectorStore

__all__ = [
    "Filter",
    "InMemoryVectorStore",
    "PineconeVectorStore",
    "VectorStore",
    "document_id",
]
