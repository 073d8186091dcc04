"""The browser rig (tests/rig/browser.py), for the tests in this directory only.

It imports playwright, which nothing else needs: loaded from tests/conftest.py, an environment
without playwright (the flake's checks.<system>.pytest) could not collect any test at all.
"""

from tests.rig.browser import browser, page, playwright_driver, pytest_runtest_makereport

__all__ = ["browser", "page", "playwright_driver", "pytest_runtest_makereport"]
