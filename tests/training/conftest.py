"""Fixtures of the training-data tests; also makes the repository's `training` package
importable, as it is not installed with spacy_gner."""
import sys
from pathlib import Path
from typing import Callable

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture
def fixtures() -> Path:
    """The tiny synthetic data files of these tests."""
    return Path(__file__).with_name("fixtures")


@pytest.fixture
def shared_data() -> Callable[[str], Path]:
    """A path under ../shared/data; the test is skipped where the checkout has none."""

    def get(subpath: str) -> Path:
        path = ROOT.parent / "shared" / "data" / subpath
        if not path.exists():
            pytest.skip(f"{path} is not here")
        return path

    return get
