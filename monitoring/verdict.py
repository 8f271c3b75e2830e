"""What monitoring concluded about one window of the prediction log: the record the trigger
policy reads, the flow emits (`mlsd.window.judged`) and the JSON summary keeps."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Status = Literal["judged", "not_enough_data"]


@dataclass(frozen=True)
class WindowVerdict:
    """One window, judged against the serving champion's own reference.

    Figures are None where they could not be measured (no labels yet, not enough data).
    `estimated_*` figures come from the calibrated scores alone: shown beside the realised
    ones, never a reason to retrain.
    """

    window_id: str
    product: str
    model_version: str  # the champion version whose reference judged the window ("3")
    start: float  # epoch seconds, inclusive
    end: float  # epoch seconds, exclusive
    rows: int  # served rows in the window
    status: Status
    drifted_share: float | None = None  # share of the model's inputs that drifted
    drifted_columns: tuple[str, ...] = ()
    score_psi: float | None = None
    quality_alert: bool = False
    failed_expectations: tuple[str, ...] = ()
    labelled_rows: int = 0
    labelled_positives: int = 0
    pr_auc: float | None = None  # labelled, fraud
    reference_pr_auc: float | None = None  # the champion's own validation PR-AUC
    precision: float | None = None  # labelled, at the version's threshold
    recall: float | None = None
    estimated_precision: float | None = None  # from calibrated scores, before labels
    estimated_alert_rate: float | None = None
    alert_rate: float | None = None  # realised share of blocked transactions
    click_through: dict[str, float] = field(default_factory=dict)  # recsys: by arm

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["drifted_columns"] = list(self.drifted_columns)
        out["failed_expectations"] = list(self.failed_expectations)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WindowVerdict:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["drifted_columns"] = tuple(known.get("drifted_columns", ()))
        known["failed_expectations"] = tuple(known.get("failed_expectations", ()))
        return cls(**known)
