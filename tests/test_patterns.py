"""Several patterns, several metrics, and the script's own output kept (issue 37): a script that
prints a line per epoch and one at the end of training (fairseq's style) is read by a list of
patterns, each feeding its own groups; the first one decides, the others are stored and shown
as the script printed them; its output, both streams, is kept beside the run's log, printed by
`show --output` with the lines read marked, and `plan --check-pattern` reads a saved one."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from contextlib import closing

import pytest

from ablate.execution.matrix import MatrixError, parse_matrix
from ablate.training.output import OutputReader, TrainerError

SCRIPT = """\
import argparse, random, sys
ap = argparse.ArgumentParser()
ap.add_argument("--lr", type=float, default=0.1); ap.add_argument("--seed", type=int, default=1)
a = ap.parse_args()
print("warming up", file=sys.stderr, flush=True)
random.seed(a.seed * 1000 + round(a.lr * 100))
for epoch in range(1, 4):
    loss = 7 + 1 / (epoch * a.lr) + 0.01 * random.random()
    print(f"| end of epoch {epoch} | time: 0.01s | valid loss {loss:.5f} | valid ppl {2 ** loss:.2f}")
print(f"| End of training | test loss {loss - 0.25:.5f} | test ppl {2 ** (loss - 0.25):.2f}")
"""

MATRIX = """\
name: two-patterns
trainer: {{command: '{python} train.py --lr {{lr}} --seed {{seed}}'}}
metric:
  name: valid_loss
  pattern:
    - 'end of epoch (?P<step>\\d+) .* valid loss (?P<valid_loss>[\\d.]+) \\| valid ppl (?P<valid_ppl>[\\d.]+)'
    - 'End of training \\| test loss (?P<test_loss>[\\d.]+) \\| test ppl (?P<test_ppl>[\\d.]+)'
  also: [{{name: test_loss, min_effect: 0.01}}]
params: {{lr: 0.1}}
min_effect: 0.01
seeds: [1, 2]
design: one-at-a-time
toggles:
  - {{name: higher, patch: {{lr: 0.2}}}}
"""


def ablate(*args: str, cwd) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "ABLATE_DB"}
    return subprocess.run([sys.executable, "-m", "ablate", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_two_patterns_feed_two_metrics_and_show_prints_them_as_printed(tmp_path):
    (tmp_path / "train.py").write_text(SCRIPT)
    (tmp_path / "m.yaml").write_text(MATRIX.format(python=sys.executable))
    ran = ablate("run", "m.yaml", "--db", "r.db", cwd=tmp_path)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    with closing(sqlite3.connect(tmp_path / "r.db")) as conn:
        run_id = conn.execute("SELECT r.id FROM runs r JOIN experiment_runs e ON e.run_id = r.id "
                              "WHERE e.name = 'baseline' AND r.seed = 1").fetchone()[0]
        evals = [(step, json.loads(extra)) for step, extra in
                 conn.execute("SELECT step, extra FROM evals WHERE run_id = ? ORDER BY step", (run_id,))]
    printed = subprocess.run([sys.executable, "train.py", "--lr", "0.1", "--seed", "1"], cwd=tmp_path,
                             capture_output=True, text=True, check=True).stdout.splitlines()
    assert [s for s, _ in evals] == [1, 2, 3, 4]  # three epochs, then the end: one past the last step
    assert all(set(e) == {"valid_loss", "valid_ppl"} for _, e in evals[:3])
    assert set(evals[3][1]) == {"test_loss", "test_ppl"}
    assert f"valid ppl {evals[2][1]['valid_ppl']:.2f}" in printed[2] and \
        f"test ppl {evals[3][1]['test_ppl']:.2f}" in printed[3]
    shown = ablate("show", "baseline", "--seed", "1", "--db", "r.db", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    for value in (evals[2][1]["valid_ppl"], evals[3][1]["test_ppl"]):  # e.g. 2540.93, never "2,541"
        assert repr(value) in shown.stdout and f"{value:,.0f}" not in shown.stdout, (value, shown.stdout)
    kept = ablate("show", "baseline", "--seed", "1", "--db", "r.db", "--output", cwd=tmp_path)
    assert kept.returncode == 0, kept.stderr
    kept_lines = kept.stdout.splitlines()  # stderr's line among stdout's, where it arrived: either side of them
    assert "  warming up" in kept_lines
    assert [line for line in kept_lines if line != "  warming up"] == ["▶ " + line for line in printed]
    saved = tmp_path / "saved.txt"
    saved.write_text(kept.stdout)  # as show printed it, marks and all
    checked = ablate("plan", "m.yaml", "--check-pattern", str(saved), cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.splitlines()[-1].startswith("4 evaluation(s), 3 with 'valid_loss'")
    assert checked.stdout.splitlines()[3].startswith("line 5: step 4, test_loss ")
    saved.write_text(printed[-1] + "\n")  # the end line alone: no evaluation of the metric
    checked = ablate("plan", "m.yaml", "--check-pattern", str(saved), cwd=tmp_path)
    assert checked.returncode == 2 and "no line gives 'valid_loss'" in checked.stderr
    ranked = json.loads(ablate("report", "m.yaml", "--db", "r.db", "-f", "json", cwd=tmp_path).stdout)
    assert ranked["effects"][0]["effect"] == "higher" and ranked["effects"][0]["verdict"] == "better"
    secondary = json.loads(ablate("report", "m.yaml", "--db", "r.db", "-f", "json", "--metric", "test_loss",
                                  cwd=tmp_path).stdout)
    assert secondary["metric"] == "test_loss" and secondary["effects"][0]["verdict"] == "better"
    assert secondary["effects"][0]["estimate"] == pytest.approx(ranked["effects"][0]["estimate"], abs=1e-4)


def test_each_pattern_of_a_list_is_checked_and_the_metric_must_be_in_one(tmp_path):
    base = MATRIX.format(python=sys.executable)
    broken = base.replace("'End of training", "'End of (training")
    with pytest.raises(MatrixError, match=r"metric\.pattern\[1\]: missing \)"):
        parse_matrix(broken, tmp_path / "m.yaml")
    missing = base.replace("(?P<valid_loss>", "(?P<other>")
    with pytest.raises(MatrixError, match=r"expected a named group \(\?P<valid_loss>"):
        parse_matrix(missing, tmp_path / "m.yaml")
    with pytest.raises(MatrixError, match="metric.pattern"):
        parse_matrix(base.replace("  pattern:\n", "  pattern: []\n  unused:\n"), tmp_path / "m.yaml")


def test_a_match_without_a_step_is_one_past_the_last_and_the_first_pattern_that_matches_reads_a_line():
    reader = OutputReader(("step (?P<step>\\d+) loss (?P<loss>[\\d.]+)", "loss (?P<other>[\\d.]+)"))
    assert reader.read("step 10 loss 1.5", 1) == {"step": 10, "loss": 1.5}
    assert reader.read("final loss 1.25", 2) == {"step": 11, "other": 1.25}
    assert reader.read("nothing here", 3) is None
    with pytest.raises(TrainerError, match="expected a number"):
        OutputReader(("v (?P<v>\\S+)",)).read("v abc", 1)


def test_the_output_kept_is_bounded_at_its_head_and_its_tail(tmp_path, monkeypatch):
    from ablate.training import transcript

    monkeypatch.setattr(transcript, "HEAD_BYTES", 100)
    monkeypatch.setattr(transcript, "TAIL_BYTES", 100)
    kept = transcript.Transcript(tmp_path / "run1-attempt1.output")
    for i in range(1000):
        kept.write(f"line {i:04d}")  # 10 bytes each, newline added
    kept.close()
    kept.write("after the end")  # a stream's thread may still hand a line: dropped, no error
    lines = (tmp_path / "run1-attempt1.output").read_text().splitlines()
    assert lines[:10] == [f"line {i:04d}" for i in range(10)]
    assert lines[10] == "[ablate: 980 lines (9,800 bytes) not kept here: the first 100 bytes and the last 100 are]"
    assert lines[11:] == [f"line {i:04d}" for i in range(990, 1000)]
