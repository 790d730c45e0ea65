"""The window's opt-in for grpo's own reward file (``train.grpo_reward_file``).

The file is Python code that runs inside the training worker with the user's rights, so it runs only after the
user agrees to these exact bytes: the agreement is kept in the user's data folder (``studio.rewards.agree``), the
run's recipe carries the sha256 it is for (``train.grpo_reward_sha256``), and a file that changed is asked about
again (as ``lora-studio train`` asks on a terminal, ``studio.commands.train``).
``decide`` is the logic; ``ask`` is the dialog, which tests replace.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from PySide6.QtWidgets import QMessageBox, QWidget

from studio import rewards
from studio.recipe import REWARD_OBJECTIVES

FILE, SHA256, MIX = "train.grpo_reward_file", "train.grpo_reward_sha256", "train.grpo_rewards"


@dataclass(frozen=True)
class Decision:
    """What becomes of a reward file: the settings to pin (its full path, the agreed sha256), or why it does
    not run (``error``: it cannot be read, so nothing was asked; otherwise the user said no)."""

    pins: dict = field(default_factory=dict)
    message: str = ""
    error: bool = False


def decide(path: str, agreed: str, ask: Callable[[Path, int, str], bool]) -> Decision:
    """Ask ``ask(path, size, sha256)`` unless the file's sha256 is the ``agreed`` one; no file: nothing to do."""
    if not str(path).strip():
        return Decision()
    p = Path(path).expanduser().resolve()  # the worker starts elsewhere: it gets the full path
    try:
        digest = rewards.file_sha256(p)
    except rewards.RewardError as e:
        return Decision(message=str(e), error=True)
    if digest == agreed.strip().lower() and rewards.agreed(p, digest):
        return Decision({FILE: str(p)})
    if not ask(p, p.stat().st_size, digest):
        return Decision(message=f"Not running {p}: you did not agree to run it.")
    rewards.agree(p, digest)  # kept in the user's data folder: the worker runs only files agreed to there
    return Decision({FILE: str(p), SHA256: digest})


def mixes_file(mix: str) -> bool:
    """Whether ``train.grpo_rewards`` names the file reward."""
    try:
        return any(name == "file" for name, _ in rewards.parse_mix(mix))
    except rewards.RewardError:
        return False  # recipe.validate() names the mistake


def runs_file(train) -> bool:
    """Whether a run with these settings loads the reward file (grpo, with 'file' among its rewards)."""
    return (train.objective in REWARD_OBJECTIVES and bool(str(train.grpo_reward_file).strip())
            and mixes_file(train.grpo_rewards))


def ask(parent: QWidget | None, path: Path, size: int, digest: str) -> bool:
    """The warning: which file, what running it means; True only for an explicit Yes."""
    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Icon.Warning)
    box.setWindowTitle("Run your reward file?")
    box.setText(f"The reward file {path} is Python code ({size:,} bytes, sha256 {digest}).")
    box.setInformativeText("It runs inside the training worker with your rights: only run a file you have read or "
                           "written. Run it for training? If the file changes, you are asked again.")
    box.setStandardButtons(QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No)
    box.setDefaultButton(QMessageBox.StandardButton.No)
    return box.exec() == QMessageBox.StandardButton.Yes
