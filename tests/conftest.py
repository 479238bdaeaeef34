"""Shared test settings: prepared files (tokenizers, ...) go to one temporary folder per session."""

import os
import tempfile

import pytest
import torch

import data

if os.environ.get("PYTEST_XDIST_WORKER"):  # `pytest -n N`: N processes share the cores, one thread each
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"  # and the processes they start


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


def lacks(what):  # the skip reason when the data directory lacks files, and how to get them
    how = "`python data.py download` fetches it (online)"
    if "iwslt14" in str(what):
        how = "fairseq's examples/translation/prepare-iwslt14.sh makes it (its tokenized-lc/ folder)"
    return f"DATA_DIR={data.data_dir()} lacks {what}: {how}"


def require(*relative_paths):
    """Skip (with the reason) when the data directory lacks these files; CI provides them."""
    missing = [p for p in relative_paths if not (data.data_dir() / p).exists()]
    return pytest.mark.skipif(bool(missing), reason=lacks(missing))
