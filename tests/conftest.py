pytest_plugins = [
    "tests.fakes.fixtures",
    "tests.fakes.postgres",
    "tests.rig.temporal",
]
