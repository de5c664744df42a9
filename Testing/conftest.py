"""Shared fixtures: one model and one CT session per test run (embeddings reused, as a user would)."""
import os
from pathlib import Path

import pytest

from testdata import CT, CT_LABELS, DATA


def pytest_configure(config):
    if not CT.exists():
        raise pytest.UsageError(f"test data not found at {DATA}: the tests read ../shared/data beside the project")
    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def model():
    from SlideSAMLib import load_model

    return load_model(device="cpu")


@pytest.fixture(scope="session")
def ct_image():
    from SlideSAMLib import read_image

    return read_image(CT)


@pytest.fixture(scope="session")
def ct_labels():
    from SlideSAMLib import array_of, read_image

    return array_of(read_image(CT_LABELS))


@pytest.fixture(scope="session")
def ct_session(model, ct_image):
    """One session on example_ct for the whole run, so tests share its embeddings as a user would."""
    from SlideSAMLib import Session, array_of

    return Session(model, array_of(ct_image), spacing=ct_image.GetSpacing())
