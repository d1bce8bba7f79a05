"""Shared test helpers: where the ../shared data lives, and a fixture that skips without it."""
import os
from pathlib import Path

# Tests use tiny models, which run fastest on one thread; it also keeps the suite from stalling when the
# machine is shared (two OpenMP threads on two busy cores can be 20x slower). Subprocesses inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402

# ../shared sits beside the checkout (CI clones main with it alongside); never copied into the project.
SHARED = Path(__file__).resolve().parent.parent.parent / "shared"
FIXTURES = SHARED / "fixtures"
DATA = SHARED / "data"


def shared_path(rel):
    """Path to a file under ../shared, or skip the test with the reason when it is absent."""
    p = SHARED / rel
    if not p.exists():
        pytest.skip(f"{p} not found: these tests need ../shared beside the checkout")
    return p
