"""Fixtures of the evaluation tests: a headless Chromium for the report test.

The browser comes from tests/browser.py (installed with apt-get when missing).
"""

import pytest

from tests.browser import ensure_chromium


@pytest.fixture(scope="session")
def chromium():
  return ensure_chromium()
