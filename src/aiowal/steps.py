"""The unit a write is split into: file changes through the page cache, then a blocking ``SyncStep``.

The synchronous API runs each step at once; ``AsyncDiskStorage`` runs them in its sync thread so that no
``fdatasync`` or unlink ever blocks the event loop.
"""

from __future__ import annotations

from collections.abc import Callable, Generator

SyncStep = Callable[[], None]
"""A blocking durability call (fdatasync/fsync of files written before it), safe to run in another thread."""

Steps = Generator[SyncStep, None, None]
