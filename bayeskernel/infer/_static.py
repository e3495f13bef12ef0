"""Static (compile-time) values for the exact route's module-level jitted functions.

JAX caches a compiled program per function object, argument shapes and static
values. ``fit`` used to build fresh closures every call, so every fit compiled
anew (1-2 s) and the compiled programs piled up until the process ran out of
memory mappings. The exact route's jitted functions now live at module level and
take the data as arguments; what decides the program's structure (the prior, the
solver's space, array shapes) travels as static values, wrapped here so that two
fits with equal priors share one compiled program.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Static"]


class Static:
    """Hashable handle on a compile-time value.

    Equal by value when the value is hashable (the built-in priors are frozen
    dataclasses compared by their fields), else by identity (a user's prior
    holding arrays: correct, just compiled once per instance).
    """

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value

    def _key(self):
        try:
            hash(self.value)
        except TypeError:
            return ("id", id(self.value))
        return ("value", type(self.value), self.value)

    def __hash__(self) -> int:
        return hash(self._key())

    def __eq__(self, other) -> bool:
        if not isinstance(other, Static):
            return NotImplemented
        if self.value is other.value:
            return True
        try:
            return bool(self._key() == other._key())
        except Exception:  # noqa: BLE001 - a value whose __eq__ cannot answer is not equal
            return False

    def __repr__(self) -> str:
        return f"Static({self.value!r})"
