"""geomxai.geometry."""

__all__: list[str] = []
