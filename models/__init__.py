"""What a trained model is and how it predicts: estimators, baselines, rules and the two-stage
recommender, as plain scikit-learn/numpy with no I/O.

Training (`pipeline`) fits and evaluates them; serving loads and runs them; both use this one
code, so an offline metric is measured with exactly the code that serves.
"""

import warnings

# Serving passes fitted models plain arrays in their fitted column order (checked when a model
# is loaded), not frames: scikit-learn's per-call checks of a frame cost as much as the model.
# It would warn on every such call that the array carries no column names.
warnings.filterwarnings(
    "ignore", message="X does not have valid feature names", category=UserWarning
)
