"""Train one config in this process, without Ray — for debugging a model or the data.

    python -m dfsearch.train --set model.attention=se --set train.epochs=1 --out runs/debug
    python -m dfsearch.train search_spaces/smoke.yaml --set model.attention=nonlocal
    python -m dfsearch.train --config trial.yaml        # a trial's config, as logged to MLflow (config/trial.yaml)
"""

from __future__ import annotations

import argparse
import json
import logging
import sys


from dfsearch import config, space
from dfsearch.cli import guarded


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m dfsearch.train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("space", nargs="?", help="optional search-space YAML: its first trial (first case and grid point, first value of the rest)")
    p.add_argument("--config", metavar="FILE", help="a trial config YAML (sections model:, data:, ... or dotted keys), e.g. a run's config/trial.yaml artifact")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one dotted key (YAML value syntax), repeatable")
    p.add_argument("--out", default="runs/local", help="folder for checkpoints and metrics.jsonl (default: runs/local)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    def body() -> int:
        flat = {}
        if args.space:
            spec = space.load(args.space)  # its first trial: first case / grid point, first value of the rest
            sampled = {k: d.probe_values()[0] for k, d in spec.searched.items() if d.kind != "grid"}
            flat = {**spec.fixed, **spec.grid_points()[0], **sampled}
        if args.config:
            logged = config.flat_from_yaml(args.config)
            # a run's config/trial.yaml replays as it ran: settings added since take the value they had then
            flat.update(config.as_logged(logged) if config.is_logged_yaml(args.config) else logged)
        for item in args.set:
            key, value = config.parse_set(item)
            flat[key] = value
        cfg = config.from_flat(flat)
        from dfsearch.train.loop import incomplete_test, run_local  # torch import after argument errors are out of the way

        final = run_local(cfg, args.out)
        print(json.dumps({k: v for k, v in final.items() if k != "test_scores"}, indent=2))
        note = incomplete_test(final)
        if note:
            print(f"warning: {note} (missing on disk, no face found, or eval.max_videos); not comparable to the paper", file=sys.stderr)
        return 0

    return guarded(body, debug=args.debug, interrupted=f"run the same command again to continue from the last checkpoint in {args.out}")


if __name__ == "__main__":
    sys.exit(main())
