"""`python -m bench`: run every benchmark and update docs/BENCHMARKS.md (see bench/run_all.py)."""

from bench.run_all import main

raise SystemExit(main())
