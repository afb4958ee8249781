"""Benchmarks: ``python -m dfsearch.bench {ray,models,data} ...``; each reports ratios against a baseline
measured in the same process."""
