"""geomxai.train."""

__all__: list[str] = []
