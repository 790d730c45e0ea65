"""Experiment trackers through the Trainer's own ``report_to``: TensorBoard always, MLflow when installed.

TensorBoard event files go to ``RUN/tensorboard/`` (the Trainer's ``TensorBoardCallback``, told
where by ``TENSORBOARD_LOGGING_DIR``). MLflow is the optional ``mlflow`` extra: when ``mlflow`` is
importable the run is logged to a local file store in the studio's data folder (``mlruns``), or to
``MLFLOW_TRACKING_URI`` when the user set one; ``LORA_STUDIO_MLFLOW=0`` turns it off. Nothing is
sent anywhere unless the user configured a remote tracking URI.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Callable

from studio import paths

TB_DIR = "tensorboard"
MLRUNS = "mlruns"


def tensorboard_available() -> bool:
    return importlib.util.find_spec("tensorboard") is not None or importlib.util.find_spec("tensorboardX") is not None


def mlflow_available() -> bool:
    return importlib.util.find_spec("mlflow") is not None


def mlflow_uri() -> str:
    """The tracking URI MLflow will use: the user's, else a file store in the studio's data folder
    (not in the runs folder, which holds run folders only)."""

    return os.environ.get("MLFLOW_TRACKING_URI") or (paths.data_dir().resolve() / MLRUNS).as_uri()


def report_to(run_dir: Path, warn: Callable[[str], None]) -> list[str]:
    """The trackers for this run, with their environment set (the worker's process is the run's own)."""
    run_dir = Path(run_dir)
    out = []
    if tensorboard_available():
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(run_dir / TB_DIR)
        out.append("tensorboard")
    else:
        warn("tensorboard is not installed in the training runtime, so this run writes no TensorBoard event files; "
             "'pip install tensorboard' adds them to the next run")
    if mlflow_available() and os.environ.get("LORA_STUDIO_MLFLOW", "1") != "0":
        os.environ["MLFLOW_TRACKING_URI"] = mlflow_uri()
        # MLflow 3 keeps the file store working behind this switch (its default is now a database,
        # which needs the full mlflow package); the lighter mlflow-skinny extra writes files.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        os.environ.setdefault("MLFLOW_EXPERIMENT_NAME", "lora-studio")
        out.append("mlflow")
    return out
