"""Signed results: a keyed hash (HMAC-SHA256) over a completed run's results that only the holder
of a key can make.

A run's identity is an unkeyed hash of its config: anyone can recompute it, so a merge tells an
edited config from its hash, but not an edited result (a loss set to 9.99) from a real one. With
`ABLATE_SIGNING_KEY` set where runs train, each completed run's outcome is signed as it is
recorded (`result.signature`: its identity, seed, result columns, result JSON and the current
attempt's evaluations); `ablate db merge --require-signed`, with the same key set, takes only
completed runs whose signature checks out. Timestamps, and the config fields refreshed at each
`ablate run` (where the data is, the timeout), are not signed: the identity stands for the config.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from .schema import EVAL_COLUMNS, RESULT_COLUMNS, Eval, Run

KEY_VARIABLE = "ABLATE_SIGNING_KEY"
SIGNATURE = "signature"  # its key in runs.result


def signature(key: str, run: Run, evals: list[Eval]) -> str:
    """The run's signature under `key` (its evaluations: the current attempt's, in step order)."""
    result = run.result if isinstance(run.result, dict) else {}
    content: dict[str, Any] = {
        "hash": run.hash, "seed": run.seed, "status": run.status,
        "results": {c: getattr(run, c) for c in RESULT_COLUMNS},
        "result": {k: v for k, v in result.items() if k != SIGNATURE},
        "evals": [[e.step, {c: getattr(e, c) for c in EVAL_COLUMNS}, e.extra] for e in evals],
    }
    blob = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return hmac.new(key.encode(), blob.encode(), hashlib.sha256).hexdigest()


def signature_problem(key: str, run: Run, evals: list[Eval]) -> str | None:
    """Why a completed run's results are not the ones signed with `key` (None: they are)."""
    given = run.result.get(SIGNATURE) if isinstance(run.result, dict) else None
    if not isinstance(given, str):
        return f"its results are not signed (--require-signed; sign them with ${KEY_VARIABLE} where they train)"
    if not hmac.compare_digest(given, signature(key, run, evals)):
        return "its signature does not match its results: edited since they were signed, or signed with another key"
    return None
