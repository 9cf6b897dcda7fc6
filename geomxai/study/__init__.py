"""geomxai.study."""

__all__: list[str] = []
