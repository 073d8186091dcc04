pytest_plugins = [
    "tests.fakes.fixtures",
    "tests.fakes.postgres",
    "tests.rig.temporal",
    "tests.rig.broker",
    "tests.rig.c0re",
    "tests.rig.browser",
]
