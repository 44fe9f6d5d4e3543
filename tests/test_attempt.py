"""One attempt, as every executor runs it: what the sink hears for each way a run can end."""

from __future__ import annotations

import io
import time

import pytest

from ablate.execution.attempt import Fanout, LogSink, run_attempt
from ablate.training.config import ExecOptions, TrainConfig

from . import fake_trainer

FAKE = "tests.fake_trainer:train"
CONFIG = TrainConfig(epochs=1, evals_per_epoch=2).to_dict()


class Recorder:
    """A sink that keeps what it hears."""

    def __init__(self):
        self.calls: list[tuple] = []

    def evaluated(self, metrics, step_metrics):
        self.calls.append(("evaluated", metrics["step"], len(step_metrics), "step_metrics" in metrics))

    def finished(self, result):
        self.calls.append(("finished", result["final_val_loss"]))

    def failed(self, error, traceback, status):
        self.calls.append(("failed", status, error, "Traceback" in traceback))


def raises(config, on_eval, options):
    on_eval({"step": 1, "val_loss": 3.0})
    raise ValueError("diverged")


def stopped(config, on_eval, options):
    raise KeyboardInterrupt("stopped by signal 15")


def takes_data(config, on_eval, options, data):
    return {"final_val_loss": data}


def test_a_completed_attempt_reports_each_evaluation_then_the_result():
    sink = Recorder()
    assert run_attempt(FAKE, CONFIG, ExecOptions(), sink) == "completed"
    curve = fake_trainer.curve(CONFIG)
    assert sink.calls == [("evaluated", e["step"], 3, False) for e in curve] + [("finished", curve[-1]["val_loss"])]


@pytest.mark.parametrize("trainer, status, error", [
    ("tests.test_attempt:raises", "failed", "ValueError: diverged"),
    ("tests.test_attempt:stopped", "interrupted", "KeyboardInterrupt: stopped by signal 15"),
    ("tests.no_such_module:train", "failed", "ModuleNotFoundError: No module named 'tests.no_such_module'"),
])
def test_every_failure_reaches_the_sink_sorted(trainer, status, error):
    sink = Recorder()
    assert run_attempt(trainer, CONFIG, ExecOptions(), sink) == status
    assert sink.calls[-1] == ("failed", status, error, True)


def test_data_changed_since_planning_fails_before_training(tmp_path):
    data = tmp_path / "titles.csv"
    data.write_text("title\na\nb\n")
    config = TrainConfig(data=str(data)).to_dict()
    planned = TrainConfig.from_dict(config).identity_hash(f"sha256:{'0' * 64}")  # other content
    sink = Recorder()
    assert run_attempt(FAKE, config, ExecOptions(), sink, run_hash=planned) == "failed"
    assert [c[:2] for c in sink.calls] == [("failed", "failed")] and "changed since" in sink.calls[0][2]


def test_prepared_data_is_passed_only_when_there_is_some():
    sink = Recorder()
    assert run_attempt("tests.test_attempt:takes_data", CONFIG, ExecOptions(), sink, data=1.25) == "completed"
    assert sink.calls == [("finished", 1.25)]


def test_fanout_writes_the_log_before_a_store_that_fails():
    class Full:
        def failed(self, error, traceback, status):
            raise OSError("database or disk is full")

    log = io.StringIO()
    with pytest.raises(OSError):
        Fanout(LogSink(log), Full()).failed("ValueError: x", "Traceback ...\n", "failed")
    assert log.getvalue() == "Traceback ...\nfailed: ValueError: x\n"


def steps_then_waits(config, on_eval, options, on_step):
    """Reports step 5 between evaluations, then waits until the database shows it."""
    from ablate.storage.store import Store

    on_step(5)
    with Store(config["db"]) as store:
        deadline = time.monotonic() + 120  # a hang guard: ends as soon as the step is seen
        while store.run(config["run_id"]).current_step != 5:
            assert time.monotonic() < deadline, "step 5 never reached the database"
            time.sleep(0.02)
    on_eval({"step": 6, "val_loss": 2.0})
    return {"final_val_loss": 2.0}


def test_a_trainers_steps_reach_the_database_between_evaluations(tmp_path):
    """What `ablate run`'s progress bar reads: the step, written by the heartbeat thread within
    about `progress_s`, before any evaluation; a new attempt starts with none."""
    from ablate.execution.attempt import StoreSink
    from ablate.storage.store import Store

    url = f"sqlite:///{tmp_path / 'r.db'}"
    with Store(url) as store:
        exp = store.upsert_experiment("e", "", "name: e", 1.754, "list")
        run_id, = store.add_runs(exp, [{"hash": "h", "name": "n", "config": {}, "toggles": [], "seed": 1,
                                           "position": 0}])
        run = store.claim([run_id], host="h", pid=1, code_version="v")
        sink = StoreSink(store, run_id, run.attempt)
        sink.keep_alive(on_lost=lambda: None, progress_s=0.05)
        status = run_attempt("tests.test_attempt:steps_then_waits", {"db": url, "run_id": run_id},
                             ExecOptions(), sink, on_step=sink.stepped)
        assert status == "completed"
        store.requeue([run_id], {"completed"})
        assert store.claim([run_id], host="h", pid=1, code_version="v").current_step is None
