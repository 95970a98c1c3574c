"""Data drift: frozen reference profiles, one module per statistical method,
and the engine that scores a window against the reference.

Where things live:

- :mod:`.reference` builds and freezes the reference profile (bins, moments,
  sorted sample, category frequencies) once; windows are never rebinned.
- :mod:`.methods` holds one module per method; :mod:`.registry` maps the config
  name (``"ks"``, ``"psi"``...) to it.
- :mod:`.engine` scores a window: per feature, per method, plus dataset drift
  and data-quality rates.
"""
