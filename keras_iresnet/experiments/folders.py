"""Run folders of the command line: create, record, load and replace what a run owns.

A folder is a run if it holds a run record (``run.json``) written by this package;
:class:`RunFolder` refuses to write into or delete anything else, and every JSON it
writes is strict (no NaN or Infinity)::

    folder = RunFolder("iresnet_runs/2d-moons").prepare(overwrite=True)
    folder.write_record({"recipe": "2d"})
    callbacks = folder_callbacks(folder)         # history.csv, backup/, best.keras
"""

from __future__ import annotations

import csv
import json
import math
import pathlib
import shutil
from typing import TYPE_CHECKING

import keras
import numpy as np

from keras_iresnet import validation

if TYPE_CHECKING:
    import os
    from typing import Any

__all__ = [
    "RunFolder",
    "RunFolderError",
    "RUN_FORMAT",
    "RUN_FILES",
    "folder_callbacks",
    "strict_json",
    "write_json",
]


class RunFolderError(ValueError):
    """A run folder cannot be used as asked (it holds someone else's files, it is a file, ...)."""


#: Written into every run record: how a folder made by this package is recognized.
RUN_FORMAT = "keras_iresnet run"

#: The files and folders each kind of run writes (and the only ones ``--overwrite`` replaces).
RUN_FILES = {
    "train": (
        "run.json",
        "model.keras",
        "best.keras",
        "metrics.json",
        "history.csv",
        "figure.png",
        "backup",
    ),
    "tune": ("run.json", "tuning.json", "best.keras", "search"),
}


def strict_json(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None`` (JSON has no NaN or Infinity)."""
    if isinstance(value, dict):
        return {str(k): strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def write_json(path: str | os.PathLike[str], value: Any) -> None:
    """Write ``value`` as strict JSON (non-finite floats become ``null``; other objects
    their ``str``).
    """
    text = json.dumps(strict_json(value), indent=2, allow_nan=False, default=str)
    pathlib.Path(path).write_text(text + "\n", encoding="utf-8")


class RunFolder:
    """A folder that ``iresnet train`` / ``iresnet tune`` owns: create, record, load, replace.

    A folder is a run if it holds a run record (``run.json``) written by this
    package. ``prepare`` refuses a path that is a file, and a non-empty folder
    that is not a run (whatever the flags: its files are not ours to replace);
    with ``overwrite=True`` it deletes only the files its kind of run writes
    (:data:`RUN_FILES`) and keeps everything else.

    Args:
      path: the folder.
      kind: ``"train"`` or ``"tune"``.
    """

    def __init__(self, path: str | os.PathLike[str], kind: str = "train") -> None:
        self.path = pathlib.Path(path)
        self.kind = validation.one_of("kind", kind, tuple(RUN_FILES))

    def __truediv__(self, name: str | os.PathLike[str]) -> pathlib.Path:
        return self.path / name

    @property
    def record_path(self) -> pathlib.Path:
        return self.path / "run.json"

    def read_record(self) -> dict[str, Any] | None:
        """The run record (a dict), or None where the folder holds no record of ours."""
        try:
            record = json.loads(self.record_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict):
            return None
        if record.get("format") == RUN_FORMAT:
            return record
        if "recipe" in record and "split" in record:  # a run of an earlier version
            return record
        return None

    def holds_run(self) -> bool:
        """Whether the folder holds a run of this package (of any kind)."""
        return self.path.is_dir() and self.read_record() is not None

    def prepare(self, overwrite: bool = False, resume: bool = False) -> RunFolder:
        """Make the folder ready for a new run (or to continue one); raises
        :class:`RunFolderError`.
        """
        if self.path.exists() and not self.path.is_dir():
            raise RunFolderError(
                f"{self.path} is a file, not a folder; choose another output folder"
            )
        if self.path.is_dir() and any(self.path.iterdir()):
            record = self.read_record()
            if record is None:
                raise RunFolderError(
                    f"{self.path} holds files that are not an iresnet run (no run.json of ours); "
                    "nothing was written or deleted there: choose a new or empty folder"
                )
            kind = record.get("kind", "train")
            if kind != self.kind:
                raise RunFolderError(
                    f"{self.path} holds an iresnet {kind} run, not a {self.kind} run; "
                    "choose another folder"
                )
            if resume:
                if not (self.path / "backup").is_dir():
                    raise RunFolderError(
                        f"--resume: {self.path} has no interrupted run to continue (no backup/)"
                    )
            elif overwrite:
                self._remove_own_files()
            else:
                raise RunFolderError(
                    f"{self.path} already holds a run; pass --overwrite to replace it, --resume "
                    "to continue an interrupted one, or --out DIR"
                )
        elif resume:
            raise RunFolderError(
                f"--resume: {self.path} has no interrupted run to continue (no run there)"
            )
        self.path.mkdir(parents=True, exist_ok=True)
        return self

    def _remove_own_files(self):
        for name in RUN_FILES[self.kind]:
            target = self.path / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()

    def write_record(self, record: dict[str, Any]) -> None:
        """Write the run record (with the format marker and the kind)."""
        write_json(self.record_path, {"format": RUN_FORMAT, "kind": self.kind, **record})

    def history(self) -> dict[str, list[float | None]]:
        """The whole per-epoch history from ``history.csv``, ``{metric: [value per epoch]}``.

        The last row of an epoch counts (a resumed run may repeat the epoch it was
        interrupted in); an empty cell is None.
        """
        path = self.path / "history.csv"
        if not path.is_file():
            return {}
        with open(path, newline="", encoding="utf-8") as handle:
            rows = {int(row["epoch"]): row for row in csv.DictReader(handle)}
        history = {}
        for epoch in sorted(rows):
            for key, value in rows[epoch].items():
                if key != "epoch":
                    history.setdefault(key, []).append(
                        float(value) if value not in ("", None) else None
                    )
        return history


def folder_callbacks(
    folder: RunFolder | pathlib.Path,
    resume: bool = False,
    logdir: str | os.PathLike[str] | None = None,
) -> list[keras.callbacks.Callback]:
    """The callbacks of a run in ``folder`` (a :class:`RunFolder`), in the order they must run.

    ``history.csv`` (one row per epoch, appended on ``resume``; written before the
    epoch's backup, so a resumed run never misses a row), ``backup/`` (Keras'
    ``BackupAndRestore``), ``best.keras`` (the best validation loss), and TensorBoard
    logs in ``logdir`` if given.
    """
    result = [
        keras.callbacks.CSVLogger(str(folder / "history.csv"), append=resume),
        keras.callbacks.BackupAndRestore(str(folder / "backup")),
        keras.callbacks.ModelCheckpoint(
            str(folder / "best.keras"), monitor="val_loss", save_best_only=True
        ),
    ]
    if logdir:
        result.append(keras.callbacks.TensorBoard(log_dir=logdir))
    return result
