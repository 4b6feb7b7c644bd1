"""Shared test settings: few threads (CI has 2 cores) and deterministic seeds."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)  # two threads are 10-100x slower when the cores are shared


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
