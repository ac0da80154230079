import os

import pytest
import torch

# Two cores: keep intra-op threads modest so parallel subprocess tests do not oversubscribe. Under
# pytest-xdist (`-n 2`, the README's command) each worker, and each process it starts, takes one thread:
# OpenMP threads that outnumber the cores spin against each other and run several times slower.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
else:
    torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def tmp_run(tmp_path):
    return tmp_path / "run"
