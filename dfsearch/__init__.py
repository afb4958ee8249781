"""dfsearch: distributed ablation and hyperparameter search for video deepfake detectors."""

__version__ = "0.1.0"
