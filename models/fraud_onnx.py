"""The fraud scorer as one ONNX graph: exported with skl2onnx when a version is trained, scored
with onnxruntime when it is served, and checked against scikit-learn before it is used.

Why: a model server scores one row per request, and scikit-learn's `predict_proba` spends about
1.3-1.5 ms of input checks and per-tree calls on one row; onnxruntime runs the same trees in
about 6 us (the issue's figures on an idle machine, the lab's 84-tree model). `make bench`
records both in the same run (`benchmarks/results/scorer.json`; on a 2-core machine at load 15:
22 us against 7.5 ms p50, 339x, max |onnx - scikit-learn| 2.2e-6 over the validation window). ONNX is the field's exchange format for trees, so the `.onnx` logged
beside the scikit-learn model can also be served by any standard runtime.

What the graph holds: skl2onnx 1.20 refuses `sklearn.frozen.FrozenEstimator`, which wraps the
prefit booster inside `CalibratedClassifierCV`, so the inner `HistGradientBoostingClassifier` is
converted alone (its raw log-odds, `raw_scores`), and the isotonic calibration is appended as a
few standard operators that interpolate linearly between the calibrator's public fitted
thresholds (`X_thresholds_`, `y_thresholds_`), as `IsotonicRegression.predict` does. (skl2onnx's
own isotonic converter takes the *nearest* threshold instead of interpolating, which differs
from scikit-learn by up to a whole calibration step, so it is not used.)

Precision: onnxruntime's tree operator compares and sums in float32. The log-odds agree with
scikit-learn's to about 1e-6; the isotonic step magnifies that by its slope, so probabilities
agree to 4e-7 on the lab's model and to 1e-4 on a small test model whose calibrator rises by
1,000 per unit of log-odds. A value closer to a split threshold than float32 can tell
(relative 6e-8) may take the other branch. `check_scorer` therefore probes each feature between
its float32 thresholds, with missing values and beyond the extremes, and checks the trees and
the calibration each against scikit-learn; a graph that disagrees (another model's, a truncated
one) is refused, and the caller keeps scikit-learn and says why.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from mlsd.registry import ModelRegistry

ONNX_FILE = "fraud.onnx"  # its name among the registry version's files
INPUT, OUTPUT, LOG_ODDS = "features", "probability", "log_odds"
# Largest |onnx - scikit-learn| accepted in log-odds, the trees' sum, on the probe rows: the
# graph sums leaf values in float32, scikit-learn in float64 (measured: at most 1.2e-6 over
# 8,000 rows of a 48-tree model; float32's relative step is 6e-8 and a sum of 300 trees stays
# well under 1e-5). A wrong graph (another model's, a missing tree) is off by 1e-2 or more.
LOG_ODDS_TOLERANCE = 1e-5
# The calibration runs in float64 in the graph and in scikit-learn: only rounding may differ.
CALIBRATION_TOLERANCE = 1e-9
PROBE_ROWS = 2_000
# Operator sets the graph is written for: what onnxruntime 1.2x and KServe's runtimes read.
OPSET = {"": 17, "ai.onnx.ml": 3}


class OnnxRefused(ValueError):
    """An estimator this module does not export, or a graph that does not match its model."""


def _member(estimator: Any) -> tuple[Any, Any]:
    """The booster and isotonic calibrator of a one-member calibrated binary classifier."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.frozen import FrozenEstimator
    from sklearn.isotonic import IsotonicRegression

    name = type(estimator).__name__
    if not isinstance(estimator, CalibratedClassifierCV) or len(estimator.classes_) != 2:
        raise OnnxRefused(f"{name}: not a calibrated binary classifier")
    if len(estimator.calibrated_classifiers_) != 1:
        raise OnnxRefused(f"{name}: {len(estimator.calibrated_classifiers_)} calibrated members")
    member = estimator.calibrated_classifiers_[0]
    booster = member.estimator
    if isinstance(booster, FrozenEstimator):
        booster = booster.estimator
    if not isinstance(booster, HistGradientBoostingClassifier):
        raise OnnxRefused(f"{name} over {type(booster).__name__}: not gradient-boosted trees")
    (calibrator,) = member.calibrators
    if not isinstance(calibrator, IsotonicRegression) or calibrator.out_of_bounds != "clip":
        raise OnnxRefused(f"{name}: calibration {type(calibrator).__name__} is not isotonic")
    return booster, calibrator


def _append_isotonic(graph: Any, raw: str, calibrator: Any) -> None:
    """probability = y0 + (y1 - y0) * (t - x0) / (x1 - x0), t = raw clipped to the fitted
    range and [x0, x1] the thresholds around it, in float64 (IsotonicRegression.predict)."""
    from onnx import TensorProto, helper, numpy_helper

    xs = np.asarray(calibrator.X_thresholds_, dtype=np.float64)
    ys = np.asarray(calibrator.y_thresholds_, dtype=np.float64)
    if xs.size == 1:  # a constant calibrator: any segment with both ends at its value
        xs, ys = np.array([xs[0], xs[0] + 1.0]), np.repeat(ys, 2)
    consts = {
        "iso_xs": xs,
        "iso_ys": ys,
        "iso_lo": np.array(calibrator.X_min_, dtype=np.float64),
        "iso_hi": np.array(calibrator.X_max_, dtype=np.float64),
        "iso_col": np.array(1, dtype=np.int64),
        "iso_one": np.array(1, dtype=np.int64),
        "iso_last": np.array(xs.size - 1, dtype=np.int64),
        "iso_axis": np.array([1], dtype=np.int64),
    }
    graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in consts.items())
    node = helper.make_node
    graph.node.extend(
        [
            # Column 1 of the classifier's raw scores is the positive class's log-odds.
            node("Gather", [raw, "iso_col"], ["iso_raw32"], axis=1),
            node("Cast", ["iso_raw32"], ["iso_raw"], to=TensorProto.DOUBLE),
            node("Clip", ["iso_raw", "iso_lo", "iso_hi"], ["iso_t"]),
            node("Unsqueeze", ["iso_t", "iso_axis"], ["iso_t_col"]),
            # How many thresholds lie at or below t (>= 1 after the clip): t's segment.
            node("LessOrEqual", ["iso_xs", "iso_t_col"], ["iso_below"]),
            node("Cast", ["iso_below"], ["iso_below_n"], to=TensorProto.INT64),
            node("ReduceSum", ["iso_below_n", "iso_axis"], ["iso_count"], keepdims=0),
            node("Min", ["iso_count", "iso_last"], ["iso_j"]),
            node("Sub", ["iso_j", "iso_one"], ["iso_i"]),
            node("Gather", ["iso_xs", "iso_i"], ["iso_x0"]),
            node("Gather", ["iso_xs", "iso_j"], ["iso_x1"]),
            node("Gather", ["iso_ys", "iso_i"], ["iso_y0"]),
            node("Gather", ["iso_ys", "iso_j"], ["iso_y1"]),
            node("Sub", ["iso_t", "iso_x0"], ["iso_dt"]),
            node("Sub", ["iso_x1", "iso_x0"], ["iso_dx"]),
            node("Sub", ["iso_y1", "iso_y0"], ["iso_dy"]),
            node("Mul", ["iso_dy", "iso_dt"], ["iso_rise"]),
            node("Div", ["iso_rise", "iso_dx"], ["iso_step"]),
            node("Add", ["iso_y0", "iso_step"], [OUTPUT]),
        ]
    )
    del graph.output[:]
    graph.node.append(node("Identity", ["iso_raw"], [LOG_ODDS]))
    graph.output.extend(
        helper.make_tensor_value_info(name, TensorProto.DOUBLE, [None])
        for name in (OUTPUT, LOG_ODDS)
    )


def export_fraud_onnx(estimator: Any) -> bytes:
    """The serialised ONNX graph of a calibrated gradient-boosting fraud model: float32 features
    in the fitted order (input `features`), P(fraud) as float64 out (output `probability`).

    Raises OnnxRefused, naming the reason, for a model it cannot express."""
    import onnx
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    booster, calibrator = _member(estimator)
    n = int(estimator.n_features_in_)
    try:
        with warnings.catch_warnings():
            # skl2onnx 1.20 writes the trees' missing-value flags as Python booleans, which
            # onnx 1.23 accepts with a DeprecationWarning; the graph is the same either way.
            warnings.filterwarnings("ignore", "Field onnx.AttributeProto.ints", DeprecationWarning)
            model = to_onnx(
                booster,
                initial_types=[(INPUT, FloatTensorType([None, n]))],
                options={id(booster): {"raw_scores": True, "zipmap": False}},
                target_opset=OPSET,
            )
    except Exception as err:  # skl2onnx raises many types for what it cannot convert
        raise OnnxRefused(f"skl2onnx: {type(err).__name__}: {err}") from err
    (scores,) = [o.name for o in model.graph.output if o.name != "label"]
    _append_isotonic(model.graph, scores, calibrator)
    names = [str(f) for f in getattr(estimator, "feature_names_in_", [])]
    onnx.helper.set_model_props(model, {"features": ",".join(names)})
    onnx.checker.check_model(model, full_check=True)
    return bytes(model.SerializeToString())


@dataclass(frozen=True)
class OnnxScorer:
    """P(fraud) from an ONNX graph, one row or a matrix at a time, on one thread."""

    session: Any  # onnxruntime.InferenceSession
    n_features: int
    features: tuple[str, ...]  # as recorded in the graph ((), if it names none)
    graph: bytes

    def score_row(self, row: Sequence[float]) -> float:
        x = np.array([row], dtype=np.float32)
        return float(self.session.run([OUTPUT], {INPUT: x})[0][0])

    def scores(self, matrix: np.ndarray) -> np.ndarray:
        """One probability per row of a float matrix (features in the fitted order)."""
        x = np.ascontiguousarray(matrix, dtype=np.float32)
        return np.asarray(self.session.run([OUTPUT], {INPUT: x})[0], dtype=np.float64)


def onnx_session(graph: bytes) -> OnnxScorer:
    """A scorer over `graph`, on one intra-op and one inter-op thread, run sequentially: a
    request is one row, and a thread pool per call costs more than the row (and competes with
    the server's other work on a small machine)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only: its notices are not for the lab's users
    try:
        session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime's own Fail/InvalidGraph types
        raise OnnxRefused(f"onnxruntime cannot load the graph: {err}") from err
    inputs, outputs = session.get_inputs(), [o.name for o in session.get_outputs()]
    if [i.name for i in inputs] != [INPUT] or OUTPUT not in outputs:
        raise OnnxRefused(f"the graph's inputs/outputs are {[i.name for i in inputs]}/{outputs}")
    width = inputs[0].shape[1]
    recorded = session.get_modelmeta().custom_metadata_map.get("features", "")
    return OnnxScorer(
        session=session,
        n_features=width if isinstance(width, int) else -1,
        features=tuple(f for f in recorded.split(",") if f),
        graph=graph,
    )


def _split_thresholds(graph: bytes) -> dict[int, np.ndarray]:
    """Per feature index, the float32 split thresholds of every tree in the graph."""
    import onnx
    from onnx import helper, numpy_helper

    found: dict[int, list[float]] = {}
    for node in onnx.load_from_string(graph).graph.node:
        if not node.op_type.startswith("TreeEnsemble"):
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if "nodes_values" in attrs:
            values = list(attrs["nodes_values"])
        else:  # thresholds stored as a tensor (a double-precision graph)
            values = numpy_helper.to_array(attrs["nodes_values_as_tensor"]).tolist()
        for f, t, mode in zip(attrs["nodes_featureids"], values, attrs["nodes_modes"], strict=True):
            if mode != b"LEAF":
                found.setdefault(int(f), []).append(float(t))
    return {f: np.unique(np.asarray(v, dtype=np.float32)) for f, v in found.items()}


def probe_rows(scorer: OnnxScorer, n: int = PROBE_ROWS, seed: int = 0) -> np.ndarray:
    """Rows that reach every branch: per feature, values strictly between consecutive float32
    thresholds (never within rounding of one), missing values, and values beyond them all."""
    rng = np.random.default_rng(seed)
    thresholds = _split_thresholds(scorer.graph)
    matrix = np.empty((n, scorer.n_features))
    for f in range(scorer.n_features):
        u = thresholds.get(f, np.zeros(1, dtype=np.float32))
        mid = ((u[:-1].astype(np.float64) + u[1:]) / 2).astype(np.float32)
        between = mid[(mid > u[:-1]) & (mid < u[1:])]
        beyond = [u[0] - max(1.0, abs(float(u[0]))), u[-1] + max(1.0, abs(float(u[-1])))]
        pool = np.concatenate([between, np.array(beyond, dtype=np.float32), [np.nan]])
        pool = pool.astype(np.float64)
        matrix[:, f] = rng.choice(pool, size=n)
    return matrix


def check_scorer(estimator: Any, scorer: OnnxScorer) -> str:
    """Why `scorer` cannot stand in for `estimator` ("" when it can). On probe rows: the graph's
    log-odds are the booster's `decision_function` within LOG_ODDS_TOLERANCE, its probability
    is the calibrator's `predict` of those log-odds within CALIBRATION_TOLERANCE, and the whole
    is `predict_proba` within what the first allows through the calibration's steepest step."""
    fitted = tuple(str(f) for f in getattr(estimator, "feature_names_in_", []))
    if scorer.n_features != estimator.n_features_in_:
        return f"the graph takes {scorer.n_features} features, the model {estimator.n_features_in_}"
    if scorer.features and fitted and scorer.features != fitted:
        return f"the graph's features {list(scorer.features)} are not the model's {list(fitted)}"
    try:
        booster, calibrator = _member(estimator)
    except OnnxRefused as err:
        return str(err)
    probe = probe_rows(scorer)
    x = np.ascontiguousarray(probe, dtype=np.float32)
    probability, log_odds = scorer.session.run([OUTPUT, LOG_ODDS], {INPUT: x})
    gaps = {
        "log-odds (the trees)": (log_odds, booster.decision_function(probe), LOG_ODDS_TOLERANCE),
        "calibration": (probability, calibrator.predict(log_odds), CALIBRATION_TOLERANCE),
        "probability": (
            probability,
            estimator.predict_proba(probe)[:, 1],
            probability_tolerance(estimator),
        ),
    }
    for what, (got, expected, tolerance) in gaps.items():
        gap = float(np.max(np.abs(np.asarray(got, dtype=np.float64) - expected)))
        if not gap <= tolerance:
            return f"the graph's {what} differ from scikit-learn's by {gap:.3g} on probe rows"
    return ""


def probability_tolerance(estimator: Any) -> float:
    """Largest |onnx - scikit-learn| in probability that LOG_ODDS_TOLERANCE allows: the log-odds
    gap times the calibrator's steepest slope, plus the calibration's own rounding."""
    _, calibrator = _member(estimator)
    dx = np.diff(np.asarray(calibrator.X_thresholds_, dtype=np.float64))
    dy = np.abs(np.diff(np.asarray(calibrator.y_thresholds_, dtype=np.float64)))
    steepest = float(np.max(dy / dx)) if dx.size else 0.0
    return LOG_ODDS_TOLERANCE * steepest + CALIBRATION_TOLERANCE


def fraud_scorer(estimator: Any, graph: bytes | None) -> tuple[OnnxScorer | None, str]:
    """The checked ONNX scorer of `estimator` (from `graph`, or converted now when the version
    has none), and a note: what was done, or why scikit-learn must score instead (then None)."""
    converted = graph is None
    try:
        scorer = onnx_session(graph if graph is not None else export_fraud_onnx(estimator))
    except OnnxRefused as err:
        return None, str(err)
    refused = check_scorer(estimator, scorer)
    if refused:
        return None, refused
    return scorer, "converted at load (the version has no .onnx)" if converted else ""


@dataclass(frozen=True)
class RegisteredFraudModel:
    estimator: Any  # the calibrated scikit-learn classifier
    graph: bytes | None  # its ONNX graph, when the version was logged with one


def load_fraud_model(registry: ModelRegistry, name: str, version: str) -> RegisteredFraudModel:
    """Version `version` of `name` from `registry`: the scikit-learn model and, beside it, the
    ONNX graph logged at training (older versions have none)."""
    import mlflow

    with registry.downloaded(name, version) as folder:
        graph = next(folder.rglob(ONNX_FILE), None)
        return RegisteredFraudModel(
            estimator=mlflow.sklearn.load_model(str(folder)),
            graph=graph.read_bytes() if graph is not None else None,
        )
