"""Rebuild the paper's Tables I-VI from the MLflow store, next to the paper's numbers.

    python -m dfsearch.report II                 # Table II from ./runs/mlflow.db (the default store of `run`)
    python -m dfsearch.report all --out report/  # every table
    python -m dfsearch.report IV V --tracking-uri http://mlflow:5000 --experiment placement

Runs that scored test-only sets (data.test_sets) add the cross-dataset table, beyond the paper (cross.md, cross.csv).
Prints the Markdown and writes report.md, report.csv, report.html (self-contained) and table_<N>.png to
--out (claims.csv: the claims' verdicts).  A cell is filled by the FINISHED, tested runs of exactly the
configuration its search space generates for it (or its --smoke twin), from any sweep in the store: seeds
become mean ± 95 % CI; missing cells say why (not run / running / failed / stopped early / interrupted); other
settings of the same cell are listed as variants.  After each table, the paper's claims about it
(dfsearch/experiments/claims.yaml; on SYNTHETIC cells the planted ones, planted.yaml) with holds / fails /
undecided / not enough cells; --check exits 1 when a claim that should hold fails.  The files are also logged to the sweep's MLflow parent run when the cells
come from one sweep (or --sweep names it).  --log-best --sweep NAME logs that sweep's best trial on validation
(--per-cell: per table cell) as an MLflow model, ready for `python -m dfsearch.predict`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from dfsearch.cli import guarded
from dfsearch.errors import DfsearchError
from dfsearch.tracking import store


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m dfsearch.report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("tables", nargs="*", default=["all"], metavar="TABLE", help="I II III IV V VI, or all (default)")
    p.add_argument("--tracking-uri", default=None, help="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite:///WORK_DIR/mlflow.db)")
    p.add_argument("--experiment", action="extend", nargs="+", default=None, metavar="NAME", help="read only these MLflow experiments (default: every experiment in the store)")
    p.add_argument("--work-dir", default=os.environ.get("DFSEARCH_WORK_DIR", "runs"), help="where `run` keeps sweeps and its default store (default: $DFSEARCH_WORK_DIR or ./runs)")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default: WORK_DIR/report)")
    p.add_argument("--sweep", default=None, help="log the files to this sweep's MLflow parent run (default: the one sweep the cells come from, if one)")
    p.add_argument("--no-log", action="store_true", help="do not log the files to MLflow")
    p.add_argument("--log-best", action="store_true", help="also log the sweep's best trial on validation (see --sweep) as an MLflow model (mlflow.pytorch), in its run")
    p.add_argument("--per-cell", action="store_true", help="with --log-best: the best trial of every table cell, not only the overall best")
    p.add_argument("--register", default=None, metavar="NAME", help="with --log-best: also register the model(s) as NAME in the store's model registry")
    p.add_argument("--paper", default=None, help="the paper's tables (default: dfsearch/experiments/paper.yaml)")
    p.add_argument("--claims", default=None, help="the paper's claims (default: dfsearch/experiments/claims.yaml)")
    p.add_argument("--planted", default=None, help="the synthetic twins' planted claims (default: dfsearch/experiments/planted.yaml)")
    p.add_argument("--overhead", default=None, metavar="SOURCE",
                   help="whose measured sweep overhead prices the runs beside their measured hours: a machine in dfsearch/overhead.yaml, "
                        "a file from `python -m dfsearch.bench sweep --overhead-out FILE`, or FILE#NAME (default: the shipped one for each run's device)")
    p.add_argument("--check", action="store_true", help="exit 1 when a claim that should hold (the paper agrees with it, or it is planted) fails")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p.parse_args(argv)


def check(tables) -> int:
    """``--check``: 1 when a claim that should hold is decided ``fails`` (each printed), else 0."""
    failed = [(t.paper.key, v) for t in tables for v in t.claims if v.alarming]
    checked = sum(len(t.claims) for t in tables)
    if failed:
        print(f"check: {len(failed)} claim(s) that should hold fail:", file=sys.stderr)
        for key, v in failed:
            print(f"  Table {key} {v.claim.id} ({v.claim.source}): {v.why}", file=sys.stderr)
        return 1
    print(f"check: none of {checked} claim(s) that should hold fails ({', '.join(f'{t.paper.key}: ' + (claims_summary(t)) for t in tables)})")
    return 0


def claims_summary(t) -> str:
    from dfsearch.report import claims

    return claims.summary(t.claims) if t.claims else ("no planted answer" if t.no_planted_answer else "no claims")


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    def body() -> int:
        from dfsearch import report
        from dfsearch.report import hours, publish

        uri = args.tracking_uri or store.default_tracking_uri(args.work_dir)
        if (args.per_cell or args.register) and not args.log_best:
            raise DfsearchError("--per-cell and --register go with --log-best")
        if args.log_best and not args.sweep:
            raise DfsearchError("--log-best needs --sweep NAME (the sweep whose best trial becomes an MLflow model)")
        tables, runset = report.build(uri, args.tables, args.experiment, args.paper or report.PAPER_FILE,
                                      args.claims or report.CLAIMS_FILE, args.planted or report.PLANTED_FILE, hours.pricer(args.overhead))
        out = Path(args.out or Path(args.work_dir) / "report")
        files, md = publish.write(tables, runset, out)
        print(md)
        from dfsearch.report import cross  # beyond the paper: runs that scored data.test_sets

        xt = cross.build(runset)
        if xt is not None:
            print(cross.markdown(xt))
            files += cross.write(xt, out)
        print(f"wrote {', '.join(p.name for p in files)} to {out}")
        if not args.no_log:
            print(publish.log_to_parent(uri, tables, runset, out, args.sweep))
        if args.log_best:
            from dfsearch.inference.attention import maps_for_run
            from dfsearch.tracking.best_model import log_best_models

            experiment = args.experiment[0] if args.experiment else args.sweep
            for m in log_best_models(uri, experiment, args.sweep, per_cell=args.per_cell, register=args.register, draw_maps=maps_for_run):
                cell = f"cell {m['cell']!r}: " if args.per_cell else ""
                print(f"best model: {cell}{m['run_name']} ({m['metric']}) -> {m['model_uri']}"
                      f"  (python -m dfsearch.predict VIDEO --model {m['model_uri']} --tracking-uri {uri})")
        if args.check:
            return check(tables)
        return 0

    return guarded(body, debug=args.debug, interrupted="nothing was written")


if __name__ == "__main__":
    sys.exit(main())
