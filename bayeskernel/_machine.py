"""What this machine can hold: the sizes that up-front guards compare against."""

from __future__ import annotations

import os

__all__ = ["memory_bytes"]

FALLBACK_MEMORY = 64 * 2**30  # where the platform does not say


def memory_bytes() -> int:
    """Physical memory of this machine in bytes."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return FALLBACK_MEMORY
