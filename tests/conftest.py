import os
import sys

import pytest
import torch

# Tests import the pack as `comfyui_flipbook` (pip install -e .). Fail loudly on a broken family.
os.environ.setdefault("FLIPBOOK_STRICT_IMPORT", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def inference():
    """ComfyUI runs every node inside torch.inference_mode(); node tests do the same."""
    with torch.inference_mode():
        yield

sys.path.insert(0, os.path.dirname(__file__))  # test helper modules (workflow_format)
