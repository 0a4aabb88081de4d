"""Plans run in a worker thread, steered from the test thread: now public in :mod:`spinlab.testing`."""
from spinlab.testing import BackgroundRun, looping_plan

__all__ = ["BackgroundRun", "looping_plan"]
