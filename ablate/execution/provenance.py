"""Where a run came from, beyond ablate's own commit: the interpreter, torch, the CPU and GPU,
and, for your own trainer, its script's repository (commit, whether it was dirty, a hash of the
diff). Recorded with every completed run's result, so a merged database keeps it and a verdict
across two machines can say so.

Read after the trainer returns: torch is asked only where the trainer imported it (your own
trainer may have none), git only in your trainer's directory, each with a short timeout.
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
from functools import lru_cache

GIT_TIMEOUT_S = 5.0


def environment(config: dict) -> dict:
    """The run's environment, as plain JSON values (missing parts left out)."""
    env = {"python": platform.python_version(), "os": platform.platform(terse=True), "cpu": cpu_model(),
           "cpu_count": os.cpu_count()}
    torch = sys.modules.get("torch")  # imported by the trainer, else not part of the run
    if torch is not None:
        env["torch"] = torch.__version__
        if torch.cuda.is_available():
            env.update(cuda=torch.version.cuda, gpu=torch.cuda.get_device_name(), driver=_nvidia_driver())
    trainer = config.get("trainer")
    if isinstance(trainer, dict) and trainer.get("workdir"):
        env.update(script_repo(trainer["workdir"]))
    return env


@lru_cache(maxsize=1)
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def script_repo(workdir: str) -> dict:
    """The git commit of the directory your trainer ran in, whether it had uncommitted changes
    to tracked files, and a hash of that diff ({} outside a repository or without git)."""
    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(["git", "-C", workdir, *args], capture_output=True, text=True,
                                  timeout=GIT_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return proc.stdout if proc.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return {}
    diff = git("diff", "HEAD") or ""
    repo = {"script_commit": commit.strip(), "script_dirty": bool(diff)}
    if diff:
        repo["script_diff_sha256"] = hashlib.sha256(diff.encode()).hexdigest()[:16]
    return repo


def _nvidia_driver() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=GIT_TIMEOUT_S).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.splitlines()[0].strip() if out.strip() else None


def machine(env: dict) -> str:
    """What of an environment can move a run's numbers, the script's commit aside (that is in
    the run's identity already): interpreter, libraries, devices, CPU and OS, in one line."""
    return describe({k: v for k, v in env.items() if not k.startswith("script_")})


def describe(env: dict) -> str:
    """One line for `show` and the HTML page."""
    parts = [f"Python {env['python']}" if env.get("python") else None,
             f"torch {env['torch']}" if env.get("torch") else None,
             f"CUDA {env['cuda']}" if env.get("cuda") else None,
             env.get("gpu"), f"driver {env['driver']}" if env.get("driver") else None,
             f"{env['cpu']} ({env['cpu_count']} cores)" if env.get("cpu") else None,
             env.get("os")]
    if env.get("script_commit"):
        dirty = f", dirty: diff {env['script_diff_sha256']}" if env.get("script_dirty") else ""
        parts.append(f"script at {env['script_commit'][:12]}{dirty}")
    return ", ".join(p for p in parts if p)
