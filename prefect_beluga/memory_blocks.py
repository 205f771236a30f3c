"""Conversation memory on a Prefect filesystem block, so workers on any machine share sessions.

`prefect_beluga.memory` knows nothing of Prefect (AI parts never import it); this module loads a
filesystem block by name and hands back a `SharedMemoryStore` on that block's fsspec filesystem.
Any of Prefect's own blocks works:

- `LocalFileSystem(basepath="/mnt/shared")` — a folder every worker mounts (NFS, SMB, ...);
- `RemoteFileSystem(basepath="s3://bucket/beluga", settings={...})` — S3, GCS, Azure, ... through
  fsspec (install the protocol's fsspec package, e.g. `s3fs`).

    ```python
    from datetime import timedelta

    from prefect.filesystems import LocalFileSystem

    from prefect_beluga.memory_blocks import aload_memory_store

    await LocalFileSystem(basepath="shared").asave("beluga-memory", overwrite=True)  # once
    store = await aload_memory_store("beluga-memory", max_turns=50, ttl=timedelta(days=30))
    ```

`flows/rag_answer.py` takes the block's name as its `memory_block` parameter. The public names
of `blocks/_memory.py`, where the Prefect code lives.
"""

from prefect_beluga.blocks._memory import MEMORY_FOLDER, aload_memory_store, memory_store_from_block

__all__ = ["MEMORY_FOLDER", "aload_memory_store", "memory_store_from_block"]
