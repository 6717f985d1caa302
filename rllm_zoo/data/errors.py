"""The data layer's error: bad or missing data, with the file and the fix in its one-line message."""

from __future__ import annotations

__all__ = ["DataError"]


class DataError(ValueError):
    """Missing or unusable data (a MedMNIST file, an image, a volume, a CSV or a data list)."""
