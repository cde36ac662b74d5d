"""Shared behaviour of the frozen architecture-config dataclasses (``MJDConfig``, ``DPAConfig``)."""

from __future__ import annotations

import dataclasses


class ConfigMixin:
    """``replace`` with a clear error for unknown fields, and ``to_dict``, for a frozen dataclass."""

    def replace(self, **changes):
        """A copy with ``changes``; unknown field names raise ValueError."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown {type(self).__name__} field(s) {sorted(unknown)}; known: {sorted(known)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
