"""The models the lab trains: estimators and baselines as plain scikit-learn/numpy, no I/O."""
