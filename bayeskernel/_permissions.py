"""File modes for results made through temporary names (mkstemp, mkdtemp: user-only)."""

from __future__ import annotations

import os

__all__ = ["result_mode"]


def result_mode(folder: bool = False) -> int:
    """The mode ``open`` or ``mkdir`` would give a new file (folder) under the umask."""
    mask = os.umask(0)  # reading the umask means setting it; set it straight back
    os.umask(mask)
    return (0o777 if folder else 0o666) & ~mask
