import os

import pytest
import torch

# Tests run on the CPU; keep them deterministic and within 2 cores.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
