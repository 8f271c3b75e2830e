"""The model servers' per-request logic without a server: names, input checks that name the input
at fault, fraud decisions and reasons, and which user vector retrieval may use."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier

from models.recsys import Embeddings
from models.recsys_bundle import RETRIEVAL_SCORE, RecsysBundle, candidates_for, recommend
from serving import inference
from serving.fallback.answers import fraud_answer_from_outputs
from serving.inference import (
    FRAUD_INPUTS,
    RECSYS_INPUTS,
    FraudVersion,
    RecsysVersion,
    RequestError,
    fraud_v1_predictions,
    fraud_v2_outputs,
    query_vector,
    rows_from_v1,
    rows_from_v2,
    score_fraud,
)
from serving.names import parse_served_name, served_name


@dataclass
class Tensor:
    """What KServe's InferInput offers the decoder."""

    name: str
    datatype: str
    shape: list[int]
    data: list[Any]


TRANSACTION = {
    "card_id": "card_1",
    "merchant_id": "m_1",
    "amount": 12.5,
    "country": "DE",
    "device_id": "d_1",
    "event_timestamp": 1_767_225_600.0,
}


def v2_tensors(row: dict[str, Any]) -> list[Tensor]:
    kinds = {str: "BYTES", float: "FP64", int: "INT64"}
    return [Tensor(k, kinds[type(v)], [1], [v]) for k, v in row.items()]


# --- names ----------------------------------------------------------------------------------


def test_a_served_name_is_product_and_registry_version():
    assert served_name("fraud", 3) == "fraud-v3"
    assert parse_served_name("fraud-v3") == ("fraud", "3")
    assert parse_served_name("recsys-v12") == ("recsys", "12")


@pytest.mark.parametrize("name", ["fraud", "fraud-3", "fraud-v0", "fraud-vlatest", "ads-v1", ""])
def test_anything_else_is_not_a_served_name(name: str):
    with pytest.raises(ValueError, match="<product>-v<version>"):
        parse_served_name(name)


# --- inputs ---------------------------------------------------------------------------------


def test_v1_and_v2_decode_to_the_same_rows():
    from_v1 = rows_from_v1({"instances": [TRANSACTION]}, FRAUD_INPUTS)
    from_v2 = rows_from_v2(v2_tensors(TRANSACTION), FRAUD_INPUTS)
    assert from_v1 == from_v2 == [TRANSACTION]


def test_v1_body_as_undecoded_json_bytes_is_read():
    assert rows_from_v1(b'{"instances": [{"user_id": "u1"}]}', RECSYS_INPUTS) == [
        {"user_id": "u1", "k": 10, "event_timestamp": None, "genre_hint": None}
    ]


def test_optional_inputs_take_their_defaults():
    row = {k: v for k, v in TRANSACTION.items() if k != "event_timestamp"}
    assert rows_from_v2(v2_tensors(row), FRAUD_INPUTS)[0]["event_timestamp"] is None


def test_numbers_may_come_in_any_numeric_datatype():
    tensors = v2_tensors(TRANSACTION)
    tensors[2] = Tensor("amount", "INT64", [1], [12])
    assert rows_from_v2(tensors, FRAUD_INPUTS)[0]["amount"] == 12.0


def test_nested_v2_data_of_shape_n_by_1_is_flattened():
    tensors = [Tensor(t.name, t.datatype, [1, 1], [t.data]) for t in v2_tensors(TRANSACTION)]
    assert rows_from_v2(tensors, FRAUD_INPUTS) == [TRANSACTION]


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda t: t.pop(2), "amount"),
        (lambda t: t.__setitem__(2, Tensor("amount", "BYTES", [1], ["12"])), "amount"),
        (lambda t: t.__setitem__(0, Tensor("card_id", "INT64", [1], [7])), "card_id"),
        (lambda t: t.__setitem__(0, Tensor("card_id", "BYTES", [2], ["a", "b"])), "card_id"),
        (lambda t: t.__setitem__(0, Tensor("card_id", "BYTES", [3], ["a"])), "card_id"),
        (lambda t: t.__setitem__(2, Tensor("amount", "FP64", [1], [None])), "amount"),
        (lambda t: t.__setitem__(2, Tensor("amount", "FP64", [1], [float("nan")])), "amount"),
        (lambda t: t.__setitem__(2, Tensor("amount", "FP64", [2, 2], [1, 2, 3, 4])), "amount"),
    ],
    ids=["missing", "bytes-for-number", "number-for-bytes", "batch", "shape", "null", "nan", "2d"],
)
def test_bad_v2_input_is_a_request_error_naming_it(change: Any, named: str):
    tensors = v2_tensors(TRANSACTION)
    change(tensors)
    with pytest.raises(RequestError, match=named) as caught:
        rows_from_v2(tensors, FRAUD_INPUTS)
    assert named in caught.value.fields


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"rows": [TRANSACTION]}, "instances"),
        ({"instances": []}, "instances"),
        ({"instances": ["card_1"]}, "instances"),
        ({"instances": [{**TRANSACTION, "country": None}]}, "country"),
        ({"instances": [{**TRANSACTION, "amount": "a lot"}]}, "amount"),
        ({"instances": [{**TRANSACTION, "amount": True}]}, "amount"),
        (b"not json", "instances"),
    ],
)
def test_bad_v1_input_is_a_request_error_naming_it(body: Any, named: str):
    with pytest.raises(RequestError) as caught:
        rows_from_v1(body, FRAUD_INPUTS)
    assert named in caught.value.fields and named in str(caught.value)


def test_k_must_be_an_integer():
    with pytest.raises(RequestError, match="'k'"):
        rows_from_v1({"instances": [{"user_id": "u", "k": 2.5}]}, RECSYS_INPUTS)


# --- fraud ----------------------------------------------------------------------------------


class ScoreIsAmountShare:
    """A stand-in estimator: the score is amount / 100 (first feature)."""

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        assert isinstance(x, np.ndarray) and x.dtype == np.float64
        p = np.clip(x[:, 0] / 100.0, 0, 1)
        return np.column_stack([1 - p, p])


def fraud_version(threshold: float = 0.5) -> FraudVersion:
    return FraudVersion(
        version="7",
        estimator=ScoreIsAmountShare(),
        features=("amount_seen", "is_new_device"),
        feature_service="fraud_scoring",
        threshold=threshold,
    )


def features(amount: float, new_device: int, card_unknown: bool = False) -> dict[str, Any]:
    return {
        "amount_seen": amount,
        "is_new_device": np.int64(new_device),
        "card_unknown": card_unknown,
        "merchant_unknown": False,
    }


def test_fraud_decision_is_the_versions_threshold_and_reasons_are_rule_codes():
    low, at, unknown = score_fraud(
        fraud_version(0.5),
        [features(10, 0), features(50, 1), features(90, 1, card_unknown=True)],
    )
    assert (low.score, low.decision, low.reasons) == (0.1, "allow", ())
    assert (at.score, at.decision, at.reasons) == (0.5, "block", ("is_new_device",))
    assert unknown.card_unknown == 1 and low.card_unknown == 0
    assert low.model_version == "fraud/7"
    # What the model saw, JSON-ready, with the store's unknown markers.
    assert at.features == {
        "amount_seen": 50,
        "is_new_device": 1,
        "card_unknown": 0,
        "merchant_unknown": 0,
    }
    assert type(at.features["is_new_device"]) is int


def test_fraud_answers_have_the_same_encoding_in_v1_and_v2():
    predictions = score_fraud(fraud_version(), [features(60, 1)])
    v1 = fraud_v1_predictions(predictions)["predictions"][0]
    v2 = {spec.name: data for spec, data in fraud_v2_outputs(predictions)}
    assert list(v2) == ["score", "decision", "reasons", "model_version", "card_unknown", "features"]
    for name, data in v2.items():
        assert v1[name] == (json.loads(data[0]) if name == "features" else data[0])
    assert v1["reasons"] == "is_new_device"
    # The router decodes what the model scored, as it logs it for monitoring.
    answer = fraud_answer_from_outputs(v2, "fraud/1")
    assert answer.features == v1["features"] and "amount_seen" in answer.features


# --- recsys ---------------------------------------------------------------------------------


def recsys_version(version: str = "3") -> RecsysVersion:
    embeddings = Embeddings(
        user_ids=np.array(["u1", "u2"], dtype=object),
        users=np.array([[1.0, 0.0], [0.0, 1.0]]),
        item_ids=np.array(["i1", "i2", "i3"], dtype=object),
        items=np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]),
    )
    bundle = RecsysBundle(embeddings, None, [], ["i3", "i1"], {}, {})
    return RecsysVersion(version, bundle, embeddings.user_index(), "recsys_ranking", 2)


@pytest.fixture
def store_vectors(monkeypatch: pytest.MonkeyPatch) -> dict[str, dict[str, Any]]:
    """The online store's user vectors, by user (what `online_features` answers)."""
    stored: dict[str, dict[str, Any]] = {}

    def online_features(entity: dict, request: Any, service: str, **_: Any) -> dict[str, Any]:
        assert service == "recsys_retrieval_user" and request is None
        default = {"user_vector": [], "user_embedding_version": "", "user_unknown": True}
        return stored.get(entity["user_id"], default)

    monkeypatch.setattr(inference.recsys, "online_features", online_features)
    return stored


def test_the_store_vector_serves_only_the_version_that_wrote_it(store_vectors: dict):
    served = recsys_version("3")
    store_vectors["u1"] = {"user_vector": [0.5, 0.5], "user_embedding_version": "3"}
    store_vectors["u2"] = {"user_vector": [0.9, 0.9], "user_embedding_version": "2"}
    store_vectors["u9"] = {"user_vector": [0.1, 0.2], "user_embedding_version": "3"}
    settings: Any = None
    np.testing.assert_array_equal(query_vector(served, "u1", settings), [0.5, 0.5])
    # Another version's vector lives in another space: the bundle's own is used.
    np.testing.assert_array_equal(query_vector(served, "u2", settings), [0.0, 1.0])
    # A user only the store knows (written after training, same version) is served too.
    np.testing.assert_array_equal(query_vector(served, "u9", settings), [0.1, 0.2])
    assert query_vector(served, "nobody", settings) is None


def test_a_store_vector_of_the_wrong_length_is_not_used(store_vectors: dict):
    store_vectors["u1"] = {"user_vector": [1.0, 2.0, 3.0], "user_embedding_version": "3"}
    np.testing.assert_array_equal(query_vector(recsys_version("3"), "u1", None), [1.0, 0.0])  # type: ignore[arg-type]


def test_a_user_nobody_knows_gets_the_popularity_list(store_vectors: dict):
    answer = inference.recommend_for(recsys_version(), {"user_id": "nobody", "k": 1}, None)  # type: ignore[arg-type]
    assert (answer.item_ids, answer.path, answer.model_version) == (
        ("i3",),
        "popularity",
        "recsys/3",
    )
    assert answer.features == {}


def test_a_genre_hint_puts_that_genres_new_releases_first_for_an_unknown_user(store_vectors):
    served = recsys_version()
    served.bundle.fresh_by_genre["jazz"] = ["j1", "i1"]
    row = {"user_id": "nobody", "k": 3, "genre_hint": "jazz"}
    answer = inference.recommend_for(served, row, None)  # type: ignore[arg-type]
    assert answer.item_ids == ("j1", "i1", "i3")  # the hint's releases, then the popular rest
    plain = inference.recommend_for(served, {"user_id": "nobody", "k": 3}, None)  # type: ignore[arg-type]
    assert plain.item_ids == ("i3", "i1")


@pytest.mark.parametrize("k", [0, -1, 101])
def test_k_out_of_range_names_k(store_vectors: dict, k: int):
    with pytest.raises(RequestError, match="'k'"):
        inference.recommend_for(recsys_version(), {"user_id": "u1", "k": k}, None)  # type: ignore[arg-type]


def test_the_ranker_scores_alike_from_plain_columns_and_from_a_frame():
    """The model server passes {name: list} (None where the store has nothing), training a
    data frame (NaN): the same candidates must get the same order and scores."""
    rng = np.random.default_rng(7)
    features = ["plays", RETRIEVAL_SCORE, "rate"]
    X = rng.normal(size=(400, 3))
    X[rng.random(400) < 0.2, 2] = np.nan  # the trees learn where missing values go
    y = (X[:, 0] + np.nan_to_num(X[:, 2], nan=1.0) > 0).astype(int)
    ranker = HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(X, y)
    served = recsys_version()
    bundle = RecsysBundle(served.bundle.embeddings, ranker, features, ["i3", "i1"], {}, {})
    plays, rate = [3.0, -1.0, 0.5], [None, 0.2, -2.0]

    def as_columns(user: str, items: Any) -> dict[str, list[Any]]:
        return {"plays": plays[: len(items)], "rate": rate[: len(items)]}

    def as_frame(user: str, items: Any) -> pd.DataFrame:
        return pd.DataFrame({"plays": plays[: len(items)], "rate": rate[: len(items)]})

    from_columns = recommend(bundle, "u1", 3, 3, as_columns, served.user_index)
    from_frame = recommend(bundle, "u1", 3, 3, as_frame, served.user_index)
    assert from_columns[2] == "model" and from_columns == from_frame
    # And both are what the ranker says of the matrix, None read as NaN.
    _, retrieval = candidates_for(bundle, "u1", 3, served.user_index)
    matrix = np.column_stack([plays, retrieval, [np.nan, 0.2, -2.0]])
    expected = ranker.predict_proba(matrix)[:, 1]
    assert from_columns[1] == sorted(expected.tolist(), reverse=True)
