"""What a model server does for a request, without KServe: load a pinned registry version, decode
V1/V2 inputs, read features from the online store, score or recommend, and encode the answer.

Its rooms: `codec` (the V2 contract: inputs, outputs, decoding, encoding), `fraud` and `recsys`
(one per product's model), `startup` (once per process). Every name is importable from here.
"""

from serving.inference.codec import (
    DEFAULT_K,
    FRAUD_INPUTS,
    FRAUD_OUTPUTS,
    MAX_K,
    RECSYS_INPUTS,
    RECSYS_OUTPUTS,
    InputSpec,
    OutputSpec,
    RequestError,
    json_scalar,
    rows_from_v1,
    rows_from_v2,
    tensor_metadata,
)
from serving.inference.fraud import (
    FRAUD_SERVICE,
    FraudPrediction,
    FraudVersion,
    fraud_features,
    fraud_v1_predictions,
    fraud_v2_outputs,
    load_fraud_version,
    score_fraud,
    warm_up_fraud,
)
from serving.inference.recsys import (
    RECSYS_SERVICE,
    RECSYS_USER_VECTOR_SERVICE,
    Recommendation,
    RecsysVersion,
    load_recsys_version,
    query_vector,
    ranking_lookup,
    recommend_for,
    recsys_v1_predictions,
    recsys_v2_outputs,
    warm_up_recsys,
)
from serving.inference.startup import champion_version, limit_native_threads

__all__ = [
    "DEFAULT_K",
    "FRAUD_INPUTS",
    "FRAUD_OUTPUTS",
    "FRAUD_SERVICE",
    "MAX_K",
    "RECSYS_INPUTS",
    "RECSYS_OUTPUTS",
    "RECSYS_SERVICE",
    "RECSYS_USER_VECTOR_SERVICE",
    "FraudPrediction",
    "FraudVersion",
    "InputSpec",
    "OutputSpec",
    "Recommendation",
    "RecsysVersion",
    "RequestError",
    "champion_version",
    "fraud_features",
    "fraud_v1_predictions",
    "fraud_v2_outputs",
    "json_scalar",
    "limit_native_threads",
    "load_fraud_version",
    "load_recsys_version",
    "query_vector",
    "ranking_lookup",
    "recommend_for",
    "recsys_v1_predictions",
    "recsys_v2_outputs",
    "rows_from_v1",
    "rows_from_v2",
    "score_fraud",
    "tensor_metadata",
    "warm_up_fraud",
    "warm_up_recsys",
]
