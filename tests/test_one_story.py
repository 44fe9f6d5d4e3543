"""One story (issue 25): every interval the report prints decides its verdict, the ranking is the
verdicts' own comparison, seeds that never varied get no verdict, and the settings a verdict
rests on are kept with the experiment.
"""

from __future__ import annotations

import json
import re
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ablate.results import frames
from ablate.results.render import render
from ablate.results.report import make_report
from ablate.results.stats import read_interval
from ablate.storage.store import open_store

from .conftest import REPO

DELTAS = (0.001, 0.002, 0.004, 0.005, 0.01, 0.02)
DECIDED = ("better", "worse", "negligible", "inconclusive")


@pytest.fixture(scope="module")
def committed(tmp_path_factory):
    """Every committed experiment's frames, loaded once from a copy of results.db."""
    copy = tmp_path_factory.mktemp("story") / "results.db"
    shutil.copy(REPO / "results.db", copy)
    with open_store(copy, read_only=True) as store:
        names = frames.list_experiments(store)["experiment"].tolist()
        return {name: (frames.pick_experiment(store, name), frames.load_runs(store, name),
                       frames.load_evals(store, name)) for name in names}


def test_every_printed_interval_decides_its_verdict_at_every_delta(committed):
    checked = 0
    for name, (exp, runs, evals) in committed.items():
        for delta in DELTAS:
            printed = json.loads(render(make_report(exp, runs, evals, min_effect=delta), "json"))
            assert printed["interval"] and printed["min_effect"] == delta
            for effect in printed["effects"]:
                if effect["verdict"] in DECIDED:
                    assert effect["verdict"] == read_interval(effect["ci_lo"], effect["ci_hi"], delta), \
                        (name, delta, effect["effect"])
                    checked += 1
            # one interval level per report, said once, and it is the one the notes give
            if len(printed["seeds"]) > 1:
                assert sum(printed["interval"] in line for line in printed["lines"] + printed["notes"]) == 2
    assert checked > 300


def test_report_cpu_ranks_by_the_paired_difference_to_the_baseline(committed):
    report = make_report(*committed["report-cpu"])
    ranked = report.ranking[report.ranking["rank"].notna()]
    assert ranked["d_base"].tolist() == sorted(ranked["d_base"].tolist())
    order = ranked["name"].tolist()
    assert order.index("dropout_005") < order.index("baseline") < order.index("sdpa")
    # the baseline's 12 seeds against most others' 3: every Δbase pairs on the shared seeds
    assert (ranked["paired"] == ranked["n"].where(ranked["name"] != "baseline", ranked["paired"])).all()
    stack = make_report(*committed["report-cpu-stack"])
    minus_swiglu = stack.ranking.set_index("name").loc["all-minus-swiglu"]
    assert minus_swiglu["paired"] == 3 and minus_swiglu["n"] == 7  # never Welch across other texts
    assert minus_swiglu["d_base_hi"] - minus_swiglu["d_base_lo"] < 0.05
    assert any(line.startswith("Split: each seed drew its own validation text (7 texts)") for line in stack.lines)


# ------------------------------------------------------------- your own trainer, two ways

TRAINER = textwrap.dedent('''
    """Prints one evaluation: 1 + lr, plus noise drawn from the seed and lr when it is given its
    seed (noise from the seed alone would cancel in every paired difference)."""
    import json, random, sys
    args = dict(a.split("=", 1) for a in sys.argv[1:])
    noise = random.Random(args["seed"] + args["lr"]).gauss(0, 0.0002) if "seed" in args else 0.0
    print(json.dumps({"step": 1, "val_loss": 1.0 + float(args["lr"]) + noise}))
''')

MATRIX = """
name: story
design: one-at-a-time
trainer: {{command: "{python} train.py lr={{lr}}{seed}"}}
params: {{lr: 0.1}}
min_effect: 0.01
seeds: {seeds}
toggles:
  - name: higher
    patch: {{lr: 0.2}}
  - name: same
    patch: {{lr: 0.1001}}
"""


def _ablate(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "ABLATE_DB"}
    return subprocess.run([sys.executable, "-m", "ablate", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def _setup(tmp_path: Path, seeded: bool, seeds: str = "[1, 2, 3]") -> Path:
    (tmp_path / "train.py").write_text(TRAINER)
    matrix = tmp_path / "story.yaml"
    matrix.write_text(MATRIX.format(python=sys.executable, seed=" seed={seed}" if seeded else "", seeds=seeds))
    return matrix


def test_a_trainer_that_ignores_its_seed_gets_no_verdict_and_a_warning_at_plan_time(tmp_path):
    matrix = _setup(tmp_path, seeded=False)
    planned = _ablate("plan", str(matrix), "--db", str(tmp_path / "s.db"), cwd=tmp_path)
    assert planned.returncode == 0, planned.stderr
    assert "never receives the seed" in " ".join((planned.stdout + planned.stderr).split())
    ran = _ablate("run", str(matrix), "--db", str(tmp_path / "s.db"), cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    out = json.loads(_ablate("report", "--db", str(tmp_path / "s.db"), "--format", "json", cwd=tmp_path).stdout)
    verdicts = {e["effect"]: e["verdict"] for e in out["effects"]}
    assert verdicts == {"higher": "seeds identical", "same": "seeds identical"}  # not "worse" at p = 0
    assert all(e["ci_lo"] is None for e in out["effects"])
    assert any("the seed does not reach the trainer" in note for note in out["notes"])


def test_settings_stay_with_the_experiment_and_later_ones_are_marked(tmp_path):
    matrix = _setup(tmp_path, seeded=True, seeds="{min: 3, max: 12}")
    db = str(tmp_path / "s.db")
    assert _ablate("run", str(matrix), "--db", db, cwd=tmp_path).returncode == 0
    first = json.loads(_ablate("report", "--db", db, "--format", "json", cwd=tmp_path).stdout)
    verdicts = {e["effect"]: (e["verdict"], e["ci_lo"]) for e in first["effects"]}
    assert verdicts["higher"][0] == "worse" and "10 looks" in first["interval"] and not first["after_data"]
    looks = first["looks_taken"]
    assert looks and looks[0] == 3
    # the matrix edited after the data: fewer looks and a larger δ would change the verdicts
    matrix.write_text(matrix.read_text().replace("{min: 3, max: 12}", "{min: 3, max: 3}")
                      .replace("min_effect: 0.01", "min_effect: 0.5"))
    assert _ablate("run", str(matrix), "--db", db, cwd=tmp_path).returncode == 0
    again = json.loads(_ablate("report", "--db", db, "--format", "json", cwd=tmp_path).stdout)
    assert {e["effect"]: (e["verdict"], e["ci_lo"]) for e in again["effects"]} == verdicts
    assert again["interval"] == first["interval"] and again["min_effect"] == 0.01
    assert any("keep δ = 0.01" in line for line in again["after_data"])
    assert any("Seed plan changed after the data" in line for line in again["after_data"])
    # δ given at report time is allowed, and said to be chosen after the data, in every format
    for fmt in ("json", "markdown", "table"):
        text = _ablate("report", "--db", db, "--format", fmt, "--min-effect", "0.2", cwd=tmp_path).stdout
        assert "chosen after the data" in " ".join(text.split()), fmt


def test_every_report_opens_with_the_decision_in_plain_words(committed):
    """Terminal and markdown open with the verdicts as helps / hurts / negligible / undecided, each
    change under the word its verdict means, before any table."""
    words = {"better": "helps", "worse": "hurts", "negligible": "negligible", "inconclusive": "undecided"}
    for name, frames_ in committed.items():
        report = make_report(*frames_)
        for fmt in ("table", "markdown"):
            head = render(report, fmt, width=100).split("Fair comparison")[0].split("Metric:")[0]
            assert "|" not in head and "─" not in head, (name, fmt)  # no table before the decision
            flat = " ".join(head.replace("**", "").replace("\n- ", "\n").split())
            parts = re.split(r"(helps|hurts|negligible \(within ±[^)]*\)|undecided|fails|no verdict): ", flat)
            groups = {label.split(" (")[0]: text for label, text in zip(parts[1::2], parts[2::2])}
            for e in report.effects.itertuples():
                if e.verdict in words:
                    change = f"removing {e.effect[1:]}" if report.design == "leave-one-out" else e.effect
                    assert f"{change} (" in groups.get(words[e.verdict], ""), (name, fmt, e.effect)
