"""Feature collection with forward hooks."""

from geomxai.collect._moments import FeatureMoments

__all__ = ["FeatureMoments"]
