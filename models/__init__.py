"""What a trained model is and how it predicts: estimators, baselines, rules and the two-stage
recommender, as plain scikit-learn/numpy with no I/O.

Training (`pipeline`) fits and evaluates them; serving loads and runs them; both use this one
code, so an offline metric is measured with exactly the code that serves.
"""
