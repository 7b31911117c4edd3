import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """The OT tests are tiny: a thread pool only adds wake-up latency (large on a shared machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
