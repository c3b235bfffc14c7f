"""Fixtures shared by several test modules."""

import pytest

from wsss.stages import training


@pytest.fixture
def trainers(monkeypatch):
    """Every Lightning Trainer the stages make during the test, in order."""
    made = []
    real = training.make_trainer

    def make(*args, **kwargs):
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(training, "make_trainer", make)
    return made
