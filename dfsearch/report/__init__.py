"""The paper's Tables I-VI rebuilt from MLflow, side by side with the paper's numbers, and the paper's
conclusions checked on them.

``dfsearch/experiments/paper.yaml`` holds every number of the paper's tables; each row and column carries a
partial trial config, and the table's ``space:`` file turns it into the one configuration that *is* the cell
(:mod:`dfsearch.report.spaces`).  A cell is filled by the FINISHED, tested runs in the tracking store with
exactly that configuration (the same seedless fingerprint) or that of its ``run --smoke`` twin, whatever sweep
ran them (so a cell printed in three tables is one number).  Runs are read back from their logged params
(re-parsed by the typed config, so ``single:DF`` and ``single:Deepfakes`` agree):

* one run per trial: the newest of a trial's runs (``dfsearch.sweep`` + ``dfsearch.trial_id``) and of runs
  that share a fingerprint (a trial that was run again with ``run --rerun``);
* a cell's seeds become mean ± 95 % CI (Student t), with n and the test-set size N (``test/videos``);
* runs of the cell's partial config with other settings (epochs, lr, compression, ...) are *variants*: listed
  under the table with what differs, never in the cell; runs tagged ``dfsearch.test_complete=false`` are
  left out of cells, with the reason;
* a cell with no tested run says why: running, failed, stopped early (ASHA), interrupted, or not run;
* synthetic runs (the ``--smoke`` twin) are used only where no real run fills the cell, and every number they
  give is labelled SYNTHETIC;
* the paper's claims about the table (``claims.yaml``), or the synthetic twin's planted ones (``planted.yaml``)
  when its cells are SYNTHETIC, get a verdict each (:mod:`dfsearch.report.claims`).

Along the data flow: :mod:`.paper` (the paper's tables as data), :mod:`.runs` (the store's trial runs),
:mod:`.spaces` (which configuration a cell is), :mod:`.tables` (cells, variants, τ), :mod:`.stats`,
:mod:`.claims` (verdicts); :mod:`.render` writes Markdown, CSV, HTML and PNG, :mod:`.publish` logs them to the
sweep's parent run, and ``python -m dfsearch.report`` is the CLI.  MLflow is imported only by :func:`read_runs`.
"""

from dfsearch.report.paper import CLAIMS_FILE, PAPER_FILE, PLANTED_FILE, TABLES, PaperCell, PaperTable, load_paper
from dfsearch.report.runs import RunRecord, RunSet, dedupe, read_runs, to_record
from dfsearch.report.stats import Stat, kendall, mean_ci
from dfsearch.report.tables import (SYNTHETIC_WORD, Cell, Table, Tau, Variant, build, build_from, build_table, ours_lookup,
                                    rank_agreement, select)
from dfsearch.tracking.store import open_store

__all__ = ["CLAIMS_FILE", "PAPER_FILE", "PLANTED_FILE", "SYNTHETIC_WORD", "TABLES", "Cell", "PaperCell", "PaperTable", "RunRecord",
           "RunSet", "Stat", "Table", "Tau", "Variant", "build", "build_from", "build_table", "dedupe", "kendall", "load_paper",
           "mean_ci", "open_store", "ours_lookup", "rank_agreement", "read_runs", "select", "to_record"]
