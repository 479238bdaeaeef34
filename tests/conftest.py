"""Shared test settings: prepared files (tokenizers, ...) go to one temporary folder per session."""

import os
import tempfile

import pytest

import data


@pytest.fixture(scope="session", autouse=True)
def prep_dir():
    with tempfile.TemporaryDirectory() as d:
        before = os.environ.get("PREP_DIR")
        os.environ["PREP_DIR"] = d
        yield d
        if before is None:
            del os.environ["PREP_DIR"]
        else:
            os.environ["PREP_DIR"] = before


def require(*relative_paths):
    """Skip (with the reason) when the data directory lacks these files; CI provides them."""
    missing = [p for p in relative_paths if not (data.data_dir() / p).exists()]
    return pytest.mark.skipif(bool(missing), reason=f"DATA_DIR={data.data_dir()} lacks {missing}")
