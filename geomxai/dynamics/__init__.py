"""geomxai.dynamics."""

__all__: list[str] = []
