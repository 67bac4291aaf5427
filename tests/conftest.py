"""Test-suite wide settings.

Tests use tiny tensors: one torch thread is fastest, and two threads spin badly on a busy 2-core
machine (observed 10-30x slowdowns), so the suite pins one thread. Progress bars and TensorBoard
files are off (the CLI and subprocesses inherit the environment).
"""
import os

import torch

os.environ.setdefault("NASDISTILL_PROGRESS", "0")
os.environ.setdefault("NASDISTILL_TENSORBOARD", "0")
torch.set_num_threads(1)
