"""Every name dfsearch writes into MLflow: tags, artifact paths, model files.  Changing one breaks stores written
before, so each lives here once; the sweep logger writes them, the report, predict and ``run`` read them.

A sweep's parent run: ``dfsearch.sweep=<name>``, ``dfsearch.role=sweep``.  A trial's run: ``dfsearch.sweep``,
``dfsearch.trial_id``, ``dfsearch.role=trial``, ``mlflow.parentRunId`` (MLflow's own nesting tag), and when it
ended normally ``dfsearch.outcome`` (tested | stopped_early).
"""

from __future__ import annotations

# ---------------------------------------------------------------------------------------------- run tags
SWEEP_TAG = "dfsearch.sweep"
TRIAL_TAG = "dfsearch.trial_id"
ROLE_TAG = "dfsearch.role"  # SWEEP_ROLE (the parent) | TRIAL_ROLE (a child)
SWEEP_ROLE = "sweep"
TRIAL_ROLE = "trial"
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own nesting tag (the UI groups children under it)
OUTCOME_TAG = "dfsearch.outcome"
TESTED = "tested"  # outcome of a trial that ran its test evaluation
STOPPED_EARLY = "stopped_early"  # outcome of a trial the scheduler (ASHA) stopped before its test
OUTCOMES = (TESTED, STOPPED_EARLY)
TRAIN_DIR_TAG = "dfsearch.train_dir"  # the trial's Ray Train run folder or URI (its checkpoints)
MODEL_TAG = "dfsearch.logged_model"  # the model URI logged for this trial's weights
ERROR_FILE_TAG = "dfsearch.error_file"
TEST_COMPLETE_TAG = "dfsearch.test_complete"  # "true" | "false": did the trial test every official video?
TEST_VIDEOS_TAG = "dfsearch.test_videos"  # "tested/expected"
VAL_VIDEOS_TAG = "dfsearch.val_videos"  # "seen/expected": validation videos, once (not a flat curve per epoch)
PROTOCOL_TAG = "dfsearch.protocol"
MODEL_NAME_TAG = "dfsearch.model"
FACE_DETECTOR_TAG = "dfsearch.face_detector"
FAILED_VIDEOS_TAG = "dfsearch.failed_videos"
PAPER_TABLE_TAG = "dfsearch.paper_table"
PAPER_CELL_TAG = "dfsearch.paper_cell"

# Sweep tags (on the parent and on every trial run).
SYNTHETIC_TAG = "dfsearch.synthetic"  # "true" on runs trained on the synthetic twin of FaceForensics++
SMOKE_TAG = "dfsearch.smoke"  # "true" on `run --smoke` sweeps
DATASET_FINGERPRINT_TAG = "dfsearch.dataset_fingerprint"
TRAIN_STORAGE_TAG = "dfsearch.train_storage"
GPUS_PER_TRIAL_TAG = "dfsearch.gpus_per_trial"  # the resources a trial held: the report's GPU-hours
CPUS_PER_TRIAL_TAG = "dfsearch.cpus_per_trial"
VERSION_TAG = "dfsearch.version"
GIT_COMMIT_TAG = "dfsearch.git_commit"
SPACE_FILE_TAG = "dfsearch.space_file"
SEARCH_METRIC_TAG = "dfsearch.search_metric"
SEARCH_MODE_TAG = "dfsearch.search_mode"

# What the end of a sweep and the report leave on the parent run.
BEST_MODEL_TAG = "dfsearch.best_model"
BEST_RUN_TAG = "dfsearch.best_run"
BEST_RUN_ID_TAG = "dfsearch.best_run_id"
BEST_RUN_NAME_TAG = "dfsearch.best_run_name"
BEST_TRIAL_ID_TAG = "dfsearch.best_trial_id"
CLAIMS_TAG = "dfsearch.claims"  # the report's verdicts (+ ".<TABLE>" per table)
CLAIMS_FAILED_TAG = "dfsearch.claims_failed"

# A live sweep's hold on its cells (dfsearch.tracking.liveness), on its parent run.
CELLS_CLAIMED_TAG = "dfsearch.cells_claimed"  # + ".0", ".1", ...: chunks of comma-separated fingerprints
CLAIMED_AT_TAG = "dfsearch.claimed_at"
HEARTBEAT_TAG = "dfsearch.heartbeat"

# ----------------------------------------------------------------------------------------- artifacts, files
CONFIG_ARTIFACT = "config/trial.yaml"  # a trial's resolved config (python -m dfsearch.train --config FILE)
SCORES_ARTIFACT = "test/scores.csv"  # a trial's per-video test scores
SCORES_KEY = "test_scores"  # the final test report's per-video [video_id, label, prob] rows (a JSON string)
# A logged model's extra files, all that dfsearch.predict reads of it.
STATE_DICT_FILE = "state_dict.pt"
CONFIG_FILE = "trial.yaml"
MODEL_TRIAL_RUN_KEY = "dfsearch.trial_run"  # in a logged model's metadata: the trial run it came from
FACES_FILE = "faces.json"  # how the training cache tracked faces (detector, every, smooth, scale, size, quality)

# MLflow 3's UI opens an experiment without this tag in its GenAI mode (traces, an empty dashboard).
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def is_finished(run) -> bool:
    """A trial's run that ended normally: FINISHED with an outcome (tested, or stopped early by ASHA)."""
    return run.info.status == "FINISHED" and run.data.tags.get(OUTCOME_TAG) in OUTCOMES


def is_tested(run) -> bool:
    """A trial's run that ended with its test evaluation: what fills a table cell or gives a best model."""
    return run.info.status == "FINISHED" and run.data.tags.get(OUTCOME_TAG) == TESTED
