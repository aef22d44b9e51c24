"""Training: experiment configs into MLflow-tracked runs, tuning, and the model registry."""
