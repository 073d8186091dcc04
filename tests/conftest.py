# The browser rig is loaded by tests/browser/conftest.py, not here: it needs playwright, which
# the other tests do not (the flake's checks.<system>.pytest runs them without it).
pytest_plugins = [
    "tests.fakes.fixtures",
    "tests.fakes.postgres",
    "tests.rig.temporal",
    "tests.rig.broker",
    "tests.rig.c0re",
]
