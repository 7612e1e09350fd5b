"""The fake model API, one per test (it records the requests the test asserts on)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.ai.fake_model_api import FakeModelApi


@pytest.fixture
def model_api() -> Iterator[FakeModelApi]:
    fake = FakeModelApi().start()
    yield fake
    fake.stop()
