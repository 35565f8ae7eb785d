import os
import warnings

import pytest
import torch

torch.set_num_threads(int(os.environ.get("SYCAM_TEST_THREADS", "2")))


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a = a.flatten().double() - a.double().mean()
    b = b.flatten().double() - b.double().mean()
    return float((a @ b) / (a.norm() * b.norm()).clamp_min(1e-30))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def one_thread():
    """Search tests run many small tensor ops: one thread beats two on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def agree(a: torch.Tensor, b: torch.Tensor, r: float = 0.999) -> bool:
    """Maps agree: identical (also when constant, where Pearson is undefined) or correlated >= r."""
    return bool(torch.allclose(a.float(), b.float(), atol=1e-4)) or pearson(a, b) >= r
