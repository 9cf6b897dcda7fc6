"""Feature collection with forward hooks, from any ``nn.Module``.

:class:`FeatureCollector` hooks named modules inside a ``with`` block; :func:`collect_features`
runs data through a model and returns an ``xr.Dataset`` (dims ``sample``, ``unit_<layer>``);
:func:`collect_moments` keeps only running means and covariances; and
:func:`collect_features_to_netcdf` streams the features to disk. :func:`available_layers`,
:func:`layer_shapes` and :func:`format_layers` say what can be collected.
"""

from geomxai.collect._collect import (
    collect_features,
    collect_features_to_netcdf,
    collect_moments,
)
from geomxai.collect._collector import FeatureCollector
from geomxai.collect._inspect import available_layers, format_layers, layer_shapes
from geomxai.collect._layers import UnknownLayerError, unwrap_model
from geomxai.collect._reduce import REDUCTIONS
from geomxai.moments import FeatureMoments

__all__ = [
    "REDUCTIONS",
    "FeatureCollector",
    "FeatureMoments",
    "UnknownLayerError",
    "available_layers",
    "collect_features",
    "collect_features_to_netcdf",
    "collect_moments",
    "format_layers",
    "layer_shapes",
    "unwrap_model",
]
