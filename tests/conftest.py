import os

import pytest
import torch

# Two cores: keep intra-op threads modest so parallel subprocess tests do not oversubscribe.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def tmp_run(tmp_path):
    return tmp_path / "run"
