"""Conversation memory on a Prefect filesystem block: a `SharedMemoryStore` on the block's filesystem.

Public as `prefect_beluga.memory_blocks`, whose docstring shows how it is used.
"""

from __future__ import annotations

from typing import Any

import fsspec
from prefect.blocks.core import Block
from prefect.filesystems import LocalFileSystem, RemoteFileSystem

from prefect_beluga.core.errors import ValidationError
from prefect_beluga.memory import SharedMemoryStore
from prefect_beluga.orchestration._prefect_internals import resolve_block_path

MEMORY_FOLDER = "beluga-memory"
"""The folder under the block's base path that holds the sessions."""


def memory_store_from_block(block: Block, *, label: str | None = None, folder: str = MEMORY_FOLDER,
                            **retention: Any) -> SharedMemoryStore:
    """A `SharedMemoryStore` in `folder` under a `LocalFileSystem` or `RemoteFileSystem` block's base path."""
    if isinstance(block, LocalFileSystem):
        root = str(resolve_block_path(block, folder))
        fs = fsspec.filesystem("file")
    elif isinstance(block, RemoteFileSystem):
        root = resolve_block_path(block, folder)
        fs = block.filesystem
    else:
        raise ValidationError(
            f"memory block: expected a LocalFileSystem or RemoteFileSystem block, got {type(block).__name__}; "
            "conversation memory needs a filesystem it can list, write and delete in"
        )
    return SharedMemoryStore(fs, root, label=label, **retention)


async def aload_memory_store(name: str, **options: Any) -> SharedMemoryStore:
    """The shared memory store on the filesystem block called `name`.

    `name` is a block name (a `local-file-system` or `remote-file-system` block is looked up) or
    a full slug such as `"remote-file-system/beluga-memory"`. Options go to `memory_store_from_block`.
    """
    if not isinstance(name, str) or not name:
        raise ValidationError(f"memory block: expected a block name, got {name!r}")
    if "/" in name:
        slugs = [name]
    else:
        slugs = [f"{kind.get_block_type_slug()}/{name}" for kind in (LocalFileSystem, RemoteFileSystem)]
    for slug in slugs:
        try:
            block = await Block.aload(slug)
        except ValueError as exc:
            if "Unable to find block document" not in str(exc) and "No block" not in str(exc):
                raise
            continue
        return memory_store_from_block(block, label=slug, **options)
    raise ValidationError(
        f"no filesystem block named {name!r} for conversation memory: create one, e.g. "
        f"`LocalFileSystem(basepath='/mnt/shared').save({name!r})` or a RemoteFileSystem with an s3:// base path"
    )


__all__ = ["MEMORY_FOLDER", "aload_memory_store", "memory_store_from_block"]
