"""Run folders: what they own, what they refuse, strict JSON, the whole history."""

import json

import numpy as np
import pytest

from keras_iresnet.experiments import folders


def test_strict_json_replaces_non_finite_numbers(tmp_path):
    value = {"a": [float("nan"), 1.0, float("inf")], 2: np.float32(0.5), "n": np.int64(3)}
    assert folders.strict_json(value) == {"a": [None, 1.0, None], "2": 0.5, "n": 3}
    folders.write_json(tmp_path / "x.json", value)

    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    assert json.loads((tmp_path / "x.json").read_text(), parse_constant=refuse)["a"] == [
        None,
        1.0,
        None,
    ]


def test_run_folder_owns_only_its_files(tmp_path):
    folder = folders.RunFolder(tmp_path / "run").prepare()
    folder.write_record({"recipe": "2d"})
    for name in ("model.keras", "metrics.json"):
        (folder / name).write_text("x")
    (folder / "mine.txt").write_text("keep me")
    assert folder.holds_run() and folder.read_record()["kind"] == "train"
    with pytest.raises(folders.RunFolderError, match="already holds a run"):
        folders.RunFolder(tmp_path / "run").prepare()
    with pytest.raises(folders.RunFolderError, match="no interrupted run"):
        folders.RunFolder(tmp_path / "run").prepare(resume=True)
    folders.RunFolder(tmp_path / "run").prepare(overwrite=True)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["mine.txt"]
    tuned = folders.RunFolder(tmp_path / "tuned", kind="tune").prepare()
    tuned.write_record({})
    with pytest.raises(folders.RunFolderError, match="holds an iresnet tune run, not a train run"):
        folders.RunFolder(tmp_path / "tuned").prepare(overwrite=True)
    other = tmp_path / "notes"
    other.mkdir()
    (other / "a.txt").write_text("mine")
    with pytest.raises(folders.RunFolderError, match="not an iresnet run"):
        folders.RunFolder(other).prepare(overwrite=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(folders.RunFolderError, match="is a file"):
        folders.RunFolder(tmp_path / "file").prepare()


def test_run_folder_history_keeps_the_last_row_of_each_epoch(tmp_path):
    folder = folders.RunFolder(tmp_path)
    (tmp_path / "history.csv").write_text(
        "epoch,loss,val_loss\n0,3.0,3.5\n1,2.5,\n1,2.0,2.4\n2,1.5,2.1\n"
    )
    assert folder.history() == {"loss": [3.0, 2.0, 1.5], "val_loss": [3.5, 2.4, 2.1]}
    assert folders.RunFolder(tmp_path / "none").history() == {}
