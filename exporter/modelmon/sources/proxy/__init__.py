"""The reverse-proxy source: watch a model server without touching its code.

Clients call the proxy; it forwards method, path (after the upstream URL's own
path, if any), query, headers and body to the model server and streams the
upstream response back as it came, while recording one event per prediction:
latency, status (a 5xx, a refused connection or a timeout is an error) and,
when configured, features and prediction extracted from the JSON bodies by
dotted paths (``instances[*].age``, ``predictions[*].label``).

One module per job:

* :mod:`.transport` - the aiohttp listener and upstream client (framing,
  hop-by-hop headers, deadlines, the connection cap, 502/504);
* :mod:`.extract` - an :class:`~.extract.Exchange` -> event items (the
  pluggable :class:`~.extract.Extractor`; :class:`~.extract.DottedPathExtractor`
  by default; :class:`~.protocol.ProtocolExtractor` for ``proxy.protocol``
  kserve-v1 / oip-v2);
* :mod:`.recorder` - the bounded queue and the thread that validates items
  into batches for the pipeline, off the request path;
* :mod:`.paths`, :mod:`.settings` - dotted paths and the config checks.
"""

from .extract import DottedPathExtractor, Exchange, ExtractionError, Extractor
from .paths import JsonPath, PathError
from .settings import proxy_model, validate_proxy_config
from .source import ProxySource

__all__ = [
    "DottedPathExtractor", "Exchange", "ExtractionError", "Extractor", "JsonPath", "PathError", "ProxySource",
    "proxy_model", "validate_proxy_config",
]
