"""Hostile input and security tests: a corpus of bad inputs (corpus.py) sent to every surface
that takes input, property tests (hypothesis), an OpenAPI fuzz run (schemathesis) and the
identity and isolation guarantees of the agents' sockets and sandboxes.

Hypothesis runs with the `hostile` profile: a bounded number of examples, derandomized (the
same examples every run, so CI is reproducible), no deadline (2 shared cores make timings
meaningless). `HYPOTHESIS_PROFILE=hostile-deep` runs ten times more examples with a random seed,
printed on failure as `@seed(...)` for reproduction.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "hostile",
    max_examples=150,
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.register_profile(
    "hostile-deep",
    max_examples=600,
    derandomize=False,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "hostile"))
