"""Talking to MLflow without Ray: what the sweep driver's logger, the report and predict share."""
