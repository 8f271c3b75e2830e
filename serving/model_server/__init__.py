"""The KServe model servers: one process per product, hosting pinned registry versions as models
`<product>-v<N>`, each loaded or unloaded at run time through the V2 model repository extension.

    python -m serving.model_server --product fraud --versions 3 4 --http-port 8081

Its rooms: `models` (the thin model classes), `repository` (versions loaded while serving),
`routes` (metadata and the lean V2 infer route), `server` (the ModelServer), `kserve_private`
(every use of KServe's private members, checked at import against the KServe they were written
for), `entry` (the command line). The model classes are thin: decoding, feature lookup, scoring
and encoding live in `serving.inference`, where tests call them directly.
"""

from serving.model_server.entry import main, parse_args
from serving.model_server.kserve_private import KServeMismatch
from serving.model_server.models import (
    DecodedRequest,
    FraudModel,
    PinnedModel,
    RecsysModel,
    decode_request,
    load_pinned_model,
    v2_response,
)
from serving.model_server.repository import VersionRepository, VersionRepositoryExtension
from serving.model_server.routes import add_lean_infer_route, add_model_metadata_route
from serving.model_server.server import LabModelServer

__all__ = [
    "DecodedRequest",
    "FraudModel",
    "KServeMismatch",
    "LabModelServer",
    "PinnedModel",
    "RecsysModel",
    "VersionRepository",
    "VersionRepositoryExtension",
    "add_lean_infer_route",
    "add_model_metadata_route",
    "decode_request",
    "load_pinned_model",
    "main",
    "parse_args",
    "v2_response",
]
