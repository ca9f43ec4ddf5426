"""Shared pytest setup: import the pack from the repo root; one torch thread.

The tiny test models are dominated by per-op overhead, which extra threads only add to on the
shared 2-core CI machine.
"""

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

torch.set_num_threads(1)
