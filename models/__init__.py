"""Models: LightGBM propensity and spend models, persona clustering, per-customer reasons."""
