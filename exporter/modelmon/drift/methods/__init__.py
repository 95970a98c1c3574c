"""One module per drift method; importing this package registers them all."""

from . import meanstd  # noqa: F401
