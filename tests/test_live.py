"""`ablate serve`, the live view (issue 35): in real Chromium (Playwright driving the system's
Chromium), a page opened on a database that does not exist yet follows a matrix as it runs, with
no reload: run counts move, curves gain points, a failure's end appears as text, and the
verdict it shows at the end is `ablate report --format json`'s. And it is safe by default."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from contextlib import closing
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="ablate[serve] is not installed")

TRAINER = """\
import argparse, sys, time
ap = argparse.ArgumentParser()
ap.add_argument("--seed", type=int); ap.add_argument("--lr", type=float); ap.add_argument("--fail", type=int)
a = ap.parse_args()
for step in range(1, 5):
    time.sleep(0.5)
    if a.fail and step == 2:
        print("about to fail <script>document.title = 'injected'</script>", file=sys.stderr, flush=True)
        sys.exit(3)
    print(f"step {step} loss {2 / (1 + a.lr * step) + 0.001 * a.seed + 0.01 * a.lr * a.seed:.5f}", flush=True)
"""

MATRIX = """\
name: live
trainer:
  command: '{python} train.py --seed {{seed}} --lr {{lr}} --fail {{fail}}'
metric: {{name: loss, pattern: 'step (?P<step>\\d+) loss (?P<loss>[\\d.]+)'}}
params: {{lr: 0.1, fail: 0}}
min_effect: 0.01
seeds: [1, 2, 3]
design: one-at-a-time
toggles:
  - name: higher
    patch: {{lr: 0.2}}
  - name: broken
    patch: {{fail: 1}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    if os.environ.get("CI") == "true":
        pytest.fail("CI=true but no Chromium: .ci/run installs Debian's chromium", pytrace=False)
    pytest.skip("no Chromium here (apt-get install chromium)")


def start_server(db: Path, *args: str, port: int | None = None) -> tuple[subprocess.Popen, str]:
    port = port or free_port()
    proc = subprocess.Popen([sys.executable, "-m", "ablate", "serve", "--db", str(db), "--port", str(port), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120  # a hang guard: it answers as soon as it listens
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("the server never listened")


@pytest.fixture
def server(tmp_path):
    db = tmp_path / "results.db"  # not created yet: the view waits for it
    proc, url = start_server(db)
    yield db, url
    proc.terminate()
    proc.wait(timeout=30)


def test_the_page_follows_a_running_matrix_without_a_reload(server, tmp_path):
    from playwright.sync_api import sync_playwright

    db, url = server
    (tmp_path / "train.py").write_text(TRAINER)
    (tmp_path / "m.yaml").write_text(MATRIX.format(python=sys.executable))
    env = {k: v for k, v in os.environ.items() if k != "ABLATE_DB"}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        # The page forbids eval (its Content-Security-Policy), which the test's probes need; a
        # second page below, under the policy, shows that the page itself keeps it.
        page = browser.new_page(viewport={"width": 1280, "height": 800}, bypass_csp=True)
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url + "/")
        page.wait_for_function("document.getElementById('connection').textContent.includes('waiting')")
        matrix = subprocess.Popen([sys.executable, "-m", "ablate", "run", "m.yaml", "--db", str(db)], cwd=tmp_path,
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            page.click("li[data-experiment='live'] a", timeout=120_000)  # it appears in the list by itself
            page.wait_for_selector("#count-completed", timeout=60_000)
            loads = page.evaluate("performance.getEntriesByType('navigation').length")
            first = int(page.inner_text("#count-completed").split()[0])
            page.wait_for_function(f"parseInt(document.getElementById('count-completed').textContent) > {first}",
                                   timeout=120_000)
            points = int(page.get_attribute("#curves", "data-points"))
            page.wait_for_function(f"Number(document.getElementById('curves').dataset.points) > {points}",
                                   timeout=120_000)
            assert page.evaluate("performance.getEntriesByType('navigation').length") == loads  # no reload
            assert matrix.wait(timeout=300) == 1, matrix.stdout.read()  # the broken runs fail it
        finally:
            if matrix.poll() is None:
                matrix.kill()
        said = subprocess.run([sys.executable, "-m", "ablate", "report", "m.yaml", "--db", str(db), "-f", "json"],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        effect = next(e for e in json.loads(said.stdout)["effects"] if e["effect"] == "higher")
        page.wait_for_function("document.getElementById('count-completed').textContent.startsWith('6 ')",
                               timeout=60_000)
        page.wait_for_function("document.querySelector('#report table.effects') !== null", timeout=60_000)
        page.wait_for_function(  # the report shown is the one of the data the page shows
            "document.getElementById('report').dataset.version === document.getElementById('main').dataset.version",
            timeout=60_000)
        row = page.locator("#report table.effects tr", has_text="higher").first
        cells = [c.strip() for c in row.locator("td").all_inner_texts()]
        assert effect["verdict"] == "better" and any(c.startswith(effect["verdict"]) for c in cells), cells
        assert f"{effect['estimate']:+.4f}" in " ".join(cells), (effect, cells)
        failure = page.locator(".failure").first
        assert "<script>document.title = 'injected'</script>" in failure.inner_text()  # as text
        assert page.title() == "ablate live: live" and page.evaluate("document.scripts.length") == 1
        assert page.evaluate("document.documentElement.scrollWidth") <= 1280
        hostile = "<img src=x onerror=\"document.title='injected'\">"  # a merged database's name may be anything
        with closing(sqlite3.connect(db)) as conn, conn:
            conn.execute("UPDATE experiment_runs SET name = ? WHERE name = 'broken'", (hostile,))
        page.wait_for_function("document.getElementById('grid').textContent.includes('<img src=x')", timeout=60_000)
        assert page.evaluate("document.querySelectorAll('main img').length") == 0 and page.title() == "ablate live: live"
        assert errors == []
        strict = browser.new_page(viewport={"width": 1280, "height": 800})
        strict.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        strict.on("pageerror", lambda e: errors.append(str(e)))
        strict.goto(url + "/experiment/live")
        strict.locator("#report table.effects").first.wait_for(timeout=60_000)
        assert strict.locator("#count-completed").inner_text() == "6 completed" and errors == []
        browser.close()


def test_beyond_loopback_it_needs_a_flag_and_then_a_token_and_reads_no_path(tmp_path):
    db = tmp_path / "results.db"
    refused = subprocess.run([sys.executable, "-m", "ablate", "serve", "--db", str(db), "--host", "0.0.0.0",
                              "--port", str(free_port())], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "--allow-remote" in refused.stderr
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "ablate", "serve", "--db", str(db), "--host", "0.0.0.0",
                             "--port", str(port), "--allow-remote"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        lines = [proc.stdout.readline() for _ in range(2)]
        assert "warning" in lines[0]
        token = lines[1].split("?token=")[1].strip()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)

        def get(path: str, headers: dict | None = None) -> tuple[int, str]:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("GET", path, headers=headers or {})  # sent as written: no client-side normalising
            answer = conn.getresponse()
            return answer.status, answer.read().decode()

        assert get("/api/experiments")[0] == 403
        assert get("/api/experiments?token=wrong")[0] == 403
        status, body = get(f"/api/experiments?token={token}")
        assert status == 200 and json.loads(body)["experiments"] == []
        assert get("/", {"Cookie": f"ablate_token={token}"})[0] == 200
        for path in ("/../../etc/passwd", "/static/../../etc/passwd", "/static/%2e%2e/%2e%2e/etc/passwd"):
            status, body = get(path, {"Cookie": f"ablate_token={token}"})
            assert status == 404 and "root:" not in body, path
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_page_is_served_while_the_database_is_missing_and_after_it_appears(tmp_path):
    """The experiments document answers 200 with what it waits for, so a page opened before the
    first run has nothing to report as an error; a progress request for an unknown experiment is
    a 404 with the reason."""
    db = tmp_path / "results.db"
    proc, url = start_server(db)
    try:
        waiting = json.load(urllib.request.urlopen(url + "/api/experiments", timeout=30))
        assert waiting["experiments"] == [] and "no results database" in waiting["waiting"]
        (tmp_path / "m.yaml").write_text(textwrap.dedent("""\
            name: tiny
            trainer: {command: 'echo loss 1.{seed}{x}'}
            metric: {name: loss, pattern: 'loss (?P<loss>[0-9.]+)'}
            params: {x: 0}
            min_effect: 0.1
            seeds: [1, 2]
            design: one-at-a-time
            toggles: [{name: more, patch: {x: 5}}]
            """))
        ran = subprocess.run([sys.executable, "-m", "ablate", "run", "m.yaml", "--db", str(db)], cwd=tmp_path,
                             capture_output=True, text=True, timeout=300)
        assert ran.returncode == 0, ran.stderr
        found = json.load(urllib.request.urlopen(url + "/api/experiments", timeout=30))
        assert [(e["name"], e["counts"]["completed"]) for e in found["experiments"]] == [("tiny", 4)]
        progress = json.load(urllib.request.urlopen(url + "/api/experiments/tiny/progress", timeout=30))
        assert sorted(p[2] for p in progress["points"]) == [1.1, 1.15, 1.2, 1.25] and progress["counts"]["completed"] == 4
        later = json.load(urllib.request.urlopen(url + f"/api/experiments/tiny/progress?since={progress['last_id']}"))
        assert later["points"] == [] and later["version"] == progress["version"]  # nothing new: nothing sent
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(url + "/api/experiments/nope/progress", timeout=30)
        assert missing.value.code == 404 and "nope" in json.load(missing.value)["error"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_stale_report_is_answered_at_once_and_rebuilt_behind_it(tmp_path, monkeypatch):
    """A report that takes long to build never holds up a request: the last one built comes back
    at once with its own version, and the new one replaces it when built."""
    from ablate.results import live
    from ablate.serve import Reports

    from .test_gpu_script import load_benchmark

    db = tmp_path / "r.db"
    load_benchmark("scale").build(db, "m", 4, 3, tmp_path)
    url = f"sqlite:///{db}"
    reports = Reports(url)
    first = reports.get("m")
    assert first["version"] == live.version(url, "m") and first["json"]["experiment"] == "m"
    with closing(sqlite3.connect(db)) as conn, conn:  # one more evaluation: a new version
        conn.execute("INSERT INTO evals (run_id, attempt, step, extra, created_at) "
                     "SELECT run_id, attempt, 99, '{\"loss\": 0.5}', created_at FROM evals LIMIT 1")
    gate, build = threading.Event(), live.report_view
    monkeypatch.setattr(live, "report_view", lambda *args: (gate.wait(60), build(*args))[1])
    stale = reports.get("m")  # returns though the rebuild waits on the gate
    assert stale["version"] == first["version"] != live.version(url, "m")
    gate.set()
    deadline = time.monotonic() + 60  # a hang guard: the rebuild ends as soon as the gate opens
    while reports.get("m")["version"] != live.version(url, "m") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert reports.get("m")["version"] == live.version(url, "m")


def test_the_view_follows_a_matrix_that_writes_postgresql(tmp_path, pg_url):
    """A cluster's database: `ablate serve --db postgresql://…` while `ablate run` writes it, read
    over HTTP as the page reads it: the experiment appears, its completed runs and points grow
    between polls that send only what is new, and the report it serves at the end is `ablate
    report --format json`'s."""
    (tmp_path / "train.py").write_text(TRAINER)
    (tmp_path / "m.yaml").write_text(MATRIX.format(python=sys.executable))
    proc, url = start_server(pg_url)

    def get(path: str) -> dict:
        with urllib.request.urlopen(url + path, timeout=120) as answer:
            return json.loads(answer.read())

    env = {k: v for k, v in os.environ.items() if k != "ABLATE_DB"}
    matrix = subprocess.Popen([sys.executable, "-m", "ablate", "run", "m.yaml", "--db", pg_url], cwd=tmp_path,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        completed, points, since, version = [], 0, 0, None
        deadline = time.monotonic() + 600  # a hang guard
        while matrix.poll() is None and time.monotonic() < deadline:
            if get("/api/experiments")["experiments"]:
                now = get(f"/api/experiments/live/progress?since={since}" + (f"&known={version}" if version else ""))
                if not now.get("unchanged"):
                    completed.append(now["counts"]["completed"])
                    points += len(now["points"])
                    assert all(p[0] > 0 for p in now["points"]) and now["last_id"] >= since
                    since, version = now["last_id"], now["version"]
            time.sleep(0.2)
        assert matrix.wait(timeout=300) == 1, matrix.stdout.read()  # the broken runs fail it
        final = get(f"/api/experiments/live/progress?since={since}&known={version}")
        if not final.get("unchanged"):
            completed.append(final["counts"]["completed"])
            points += len(final["points"])
        assert completed[-1] == 6 and len(set(completed)) > 2, completed  # seen to move, not only at the end
        assert points == 6 * 4 + 3 * 1  # every evaluation once: 6 runs of 4, 3 broken runs of 1
        said = subprocess.run([sys.executable, "-m", "ablate", "report", "m.yaml", "--db", pg_url, "-f", "json"],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        deadline = time.monotonic() + 300  # built in the background: the one of the data that is there now
        while (served := get("/api/experiments/live/report"))["version"] != final["version"]:
            assert time.monotonic() < deadline, (served["version"], final["version"])
            time.sleep(0.2)
        assert served["json"] == json.loads(said.stdout)
    finally:
        if matrix.poll() is None:
            matrix.kill()
        proc.terminate()
        proc.wait(timeout=30)
