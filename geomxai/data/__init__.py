"""geomxai.data."""

__all__: list[str] = []
