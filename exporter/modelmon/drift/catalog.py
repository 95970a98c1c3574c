"""The drift methods a config may name, and the feature types each applies to.

The method modules (numpy, scipy) register themselves in :mod:`.registry`;
this table is the light copy that config validation and the CLI's help read,
so loading a config or printing ``modelmon --help`` imports no numerical
library.  ``tests/test_drift_startup.py`` checks it equals the registry.
"""

from __future__ import annotations

#: Method name -> the feature types it applies to.
METHOD_FEATURE_TYPES: dict[str, frozenset[str]] = {
    "chisquare": frozenset({"categorical"}),
    "jensenshannon": frozenset({"categorical", "numerical"}),
    "ks": frozenset({"numerical"}),
    "meanstd": frozenset({"numerical"}),
    "psi": frozenset({"categorical", "numerical"}),
    "wasserstein": frozenset({"numerical"}),
}

#: Every method name, sorted as :func:`.registry.names` lists them.
METHOD_NAMES: tuple[str, ...] = tuple(sorted(METHOD_FEATURE_TYPES))
