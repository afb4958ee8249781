"""The only layer that knows Ray: cluster connection, trial drivers, the Tuner, resume and MLflow logging."""
