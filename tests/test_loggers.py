from pathlib import Path

import pytest

from wsss.config import RunConfig, TrainerConfig
from wsss.errors import ConfigError
from wsss.stages.training import make_loggers


def test_csv_and_tensorboard_by_default_and_unknown_logger_rejected(tmp_path):
    loggers = make_loggers(RunConfig(), tmp_path, "x")
    assert [type(lg).__name__ for lg in loggers] == ["CSVLogger", "TensorBoardLogger"]
    with pytest.raises(ConfigError, match="mlflow"):
        make_loggers(RunConfig(trainer=TrainerConfig(loggers=["mlflow"])), tmp_path, "x")


def test_wandb_runs_offline_without_an_account(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    (logger,) = make_loggers(RunConfig(trainer=TrainerConfig(loggers=["wandb"])), tmp_path, "run")
    logger.log_metrics({"val/miou": 50.0})
    logger.experiment.finish()
    assert list(Path(tmp_path).rglob("offline-run-*"))
