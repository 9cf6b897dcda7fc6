"""Collection rules for the doctest run over ``geomxai/``.

``--doctest-modules`` imports every module of the package, and the callbacks for optional
extras import their framework at module level (on purpose: the error names the extra to
install). Without the extra installed those modules are skipped here, not failed; their
behaviour is tested in ``tests/monitor`` where the framework is present.
"""

import importlib.util

_OPTIONAL = {
    "geomxai/monitor/_transformers.py": "transformers",
    "geomxai/monitor/_lightning.py": "lightning",
}

collect_ignore = [path for path, module in _OPTIONAL.items() if importlib.util.find_spec(module) is None]
