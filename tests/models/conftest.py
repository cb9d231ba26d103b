import pytest
import torch
from models_testlib import SIZE


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    # The test machine's two cores are shared; more threads only add contention.
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(2, 3, SIZE, SIZE)
