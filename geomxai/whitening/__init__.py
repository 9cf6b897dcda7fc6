"""geomxai.whitening."""

__all__: list[str] = []
