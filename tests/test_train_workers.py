"""train.workers: the folds and the final model in spawned processes give one process's outputs, byte for byte."""

import os
from pathlib import Path

import pytest
import torch

from lib.errors import PipelineError
from lib.io import file_sha256
from lib.ml.trainer import check_checkpoint, train_jobs
from lib.params import validate_params
from tests.helpers import run_stages, small_params, stage_commands, write_params

OUTPUTS = (
    "models/fold_00.pt",
    "models/fold_01.pt",
    "models/final.pt",
    "reports/train/metrics.json",
    "reports/train/curves.csv",
)


def _params(**train):
    p = small_params()
    p["model"].update(hidden=4, dropout=0.2, ensemble=2)  # dropout and two members: RNG state matters
    p["train"].update({"epochs": 2, "threads": 1, **train})  # one thread per process: two workers fit two cores
    return p


@pytest.mark.slow
def test_two_workers_write_the_bytes_of_one_process(workdir, monkeypatch, capfd):
    write_params(workdir, _params())
    run_stages("download", "validate", "featurize", "train")
    serial = {f: Path(f).read_bytes() for f in OUTPUTS}
    capfd.readouterr()

    monkeypatch.setenv("PIPELINE_QUIET", "0")  # the workers' log lines (this process logs nowhere)
    monkeypatch.delenv("CI", raising=False)
    write_params(workdir, _params(workers=2))
    run_stages("train")
    for f in OUTPUTS:
        assert Path(f).read_bytes() == serial[f], f
    assert sorted(p.name for p in Path("models").glob("*.pt")) == ["final.pt", "fold_00.pt", "fold_01.pt"]
    ckpt = torch.load("models/final.pt", weights_only=True)
    assert "workers" not in ckpt["params"]["train"]  # how it ran is not part of the model
    features = stage_commands()["predict"][1]
    for workers in (1, 3):  # predict accepts the model whatever train.workers says now
        check_checkpoint(
            ckpt,
            Path("models/final.pt"),
            validate_params(_params(workers=workers)),
            file_sha256(features[features.index("--features") + 1]),
        )
    assert not any(Path(".cache/train").rglob("*.pt")), "the resume state is removed once every model is written"
    err = capfd.readouterr().err
    for tag in ("fold_00/m0", "fold_01/m1", "final/m1/refit"):
        assert f"lib.ml.trainer INFO {tag} epoch 1: train " in err, err


@pytest.mark.slow
def test_an_error_in_a_worker_is_the_error_of_one_process(workdir):
    """An empty fold fails inside train_fold; two workers raise the same one-line error."""
    messages = []
    for workers in (1, 2):
        p = _params(workers=workers, epochs=1, final_refit=False)  # the other models only need to end soon
        p["model"].update(ensemble=1, seq_len=600)  # longer than fold_00's fit window: no anchor row there
        write_params(workdir, p)
        if workers == 1:
            run_stages("download", "validate", "featurize")
        with pytest.raises(PipelineError) as err:
            run_stages("train")
        messages.append(str(err.value))
    assert messages[0] == messages[1]
    assert messages[0].startswith("train: fold_00 has 0 training and ") and "\n" not in messages[0]


class _DiesWhenUnpickled:
    def __reduce__(self):
        return os._exit, (9,)


@pytest.mark.slow
def test_a_worker_that_dies_is_a_clear_error():
    with pytest.raises(PipelineError, match=r"train: a worker process died \(out of memory\?\) with train.workers=2"):
        list(train_jobs([_DiesWhenUnpickled(), _DiesWhenUnpickled()], workers=2))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "params.yaml: train.workers must be in [1, 256], got 0"),
        ("two", "params.yaml: train.workers must be an integer, got 'two' (str)"),
        (2.0, "params.yaml: train.workers must be an integer, got 2.0 (float)"),
    ],
)
def test_a_bad_workers_value_names_the_key(value, message):
    p = _params(workers=value)
    with pytest.raises(PipelineError) as err:
        validate_params(p)
    assert str(err.value) == message
