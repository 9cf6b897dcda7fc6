"""Feature collection with forward hooks, from any ``nn.Module``.

:class:`FeatureCollector` hooks named modules inside a ``with`` block; :func:`collect_features`
runs data through a model and returns an ``xr.Dataset`` (dims ``sample``, ``unit_<layer>``);
:func:`collect_moments` keeps only running means and covariances; and
:func:`collect_features_to_netcdf` streams the features to disk. :func:`available_layers`,
:func:`layer_shapes` and :func:`format_layers` say what can be collected.

Names are imported on first use, so listing a model's layers loads no xarray.
"""

from geomxai._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "._collect": ["collect_features", "collect_features_to_netcdf", "collect_moments"],
        "._collector": ["FeatureCollector"],
        "._inspect": ["available_layers", "format_layers", "layer_shapes"],
        "._layers": ["UnknownLayerError", "resolve_layers", "unwrap_model"],
        "._reduce": ["REDUCTIONS"],
        "geomxai.moments": ["FeatureMoments"],
    },
)
