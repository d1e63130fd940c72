"""Shared test settings: no W&B network, no Ray dashboard, quiet Lightning."""
import os

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("PYTHONHASHSEED", "0")
if not torch.cuda.is_available():
    # The Triton kernels (test_gru_triton.py) then run in Triton's CPU interpreter; set before
    # anything imports them, since triton.jit reads it when a kernel is defined.
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture
def one_thread():
    """Tiny tensors: extra threads only add contention on a shared 2-core CI machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
