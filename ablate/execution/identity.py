"""What a run and an experiment are, recomputed from what another database says they are:
`ablate db merge` takes nothing whose identity does not follow from its own content.

A run's identity is the hash of its config with its data's (or your trainer's inputs')
fingerprint, computed the way the runner plans it (`TrainConfig.identity_hash` for Mainrun's
trainer, `ParamsConfig.identity_hash` for your own); a config edited after its hash was taken
no longer gives that hash. An experiment is its name and what defines its runs: the base, the
data, the factors and design, the trainer, its params, inputs and metric. Its description,
seeds, limits and how it runs are not part of it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ..storage.merge import Checks, MergeReport
from ..storage.merge import merge as merge_checked
from ..storage.database import StoreError
from ..storage.store import Store
from ..training.catalog import CATALOG
from ..training.config import ConfigError, TrainConfig
from ..training.datasource import DataError, fingerprint
from ..training.params import ParamsConfig, is_custom
from .safe_yaml import YAMLProblem, read_mapping

DEFINING_KEYS = ("base", "data", "design", "toggles", "runs", "trainer", "params", "inputs", "metric")
NOT_DEFINING_TRAINER_KEYS = ("timeout",)  # how long a run may take is not what it measures


def run_problem(config: dict, run_hash: str, stored_fingerprint: str | None) -> str | None:
    """Why `config` is not the run `run_hash` names (None: it is). The fingerprint is the one
    stored with the run, else that of the data or inputs as they are on this machine."""
    try:
        if is_custom(config):
            own = ParamsConfig.from_dict(config)
            own.by_hand()  # its command fills in within bounds (a forged hash can hide a giant width)
            actual = own.identity_hash(stored_fingerprint or own.fingerprint())
        else:
            cfg = TrainConfig.from_dict(config)
            actual = cfg.identity_hash(stored_fingerprint or fingerprint(cfg.data))
    except (DataError, FileNotFoundError):
        where = config.get("data") if not is_custom(config) else config["trainer"].get("workdir")
        return (f"its identity cannot be checked: no fingerprint of its data or inputs is stored (a "
                f"database written before ablate stored them) and they are not here ({where!r})")
    except (ConfigError, TypeError, ValueError, AttributeError, KeyError) as e:
        return f"config is not a run's config: {e}"
    if actual != run_hash:
        return f"config does not give its identity (it hashes to {actual}): edited after the run was planned"
    return None


def matrix_identity(yaml_text: str | None) -> str | None:
    """A hash of what defines an experiment's runs in its stored matrix text (None: no text).
    Text that does not parse is its own identity."""
    if yaml_text is None:
        return None
    try:
        spec = read_mapping(yaml_text)
    except YAMLProblem:
        spec = {"text": yaml_text}
    defining: dict[str, Any] = {k: spec[k] for k in DEFINING_KEYS if k in spec}
    if isinstance(defining.get("trainer"), dict):
        defining["trainer"] = {k: v for k, v in defining["trainer"].items() if k not in NOT_DEFINING_TRAINER_KEYS}
    blob = json.dumps(defining, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def same_matrix(ours: str | None, theirs: str | None) -> bool:
    """Whether two stored matrix texts define the same experiment."""
    return matrix_identity(ours) == matrix_identity(theirs)


def link_problem(yaml_text: str | None, name: str, toggles: Any, config: Any) -> str | None:
    """Why the run a link names `name` is not the configuration the experiment's matrix calls
    that: the matrix's base values (your trainer's `params`, Mainrun's `base.overrides`) with
    the patches of the link's toggles (inline, catalog, or `field=value`) must be the run's.
    None where they are, or where the matrix says too little to tell (a preset's own fields)."""
    if not isinstance(config, dict) or not isinstance(toggles, list):
        return None
    try:
        spec = read_mapping(yaml_text or "")
    except YAMLProblem:
        return None
    own = "trainer" in spec
    if own:
        base = spec.get("params")
    else:
        base = spec["base"].get("overrides") if isinstance(spec.get("base"), dict) else None
    expected = dict(base) if isinstance(base, dict) else {}
    inline = {t["name"]: t.get("patch") for t in spec.get("toggles") or [] if isinstance(t, dict) and "name" in t}
    for label in toggles:
        if isinstance(inline.get(label), dict):
            expected.update(inline[label])
        elif not own and label in CATALOG:
            expected.update(CATALOG[label].patch)
        elif isinstance(label, str) and "=" in label:
            key, _, value = label.partition("=")
            expected[key] = value
        else:
            return None  # a label this check cannot read: the fields it sets are unknown
    for key, want in expected.items():
        if key in config and not _same(config[key], want):
            return (f"links {name!r} to a run whose {key} is {config[key]!r}, where the matrix's {name!r} has "
                    f"{want!r}: a run linked under another configuration's name")
    return None


def _same(have: Any, want: Any) -> bool:
    """A stored config value against the matrix's (a label's text, a YAML number or list)."""
    if isinstance(have, (list, tuple)) and isinstance(want, (list, tuple)):
        return len(have) == len(want) and all(_same(h, w) for h, w in zip(have, want))
    if isinstance(want, str) and not isinstance(have, str):  # `lr=0.5`: the label's text
        text = ",".join(map(_label, have)) if isinstance(have, (list, tuple)) else _label(have)
        return text == want
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (have, want))
    return float(have) == float(want) if numbers else have == want


def _label(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def merge(target: Store, source: str | Path, *, renames: list[str] = (), skip_invalid: bool = False,
          signing_key: str | None = None) -> MergeReport:
    """`ablate db merge`: the other database's runs and experiments, each checked as above;
    `renames` are `NAME:NEW`, their experiment NAME merged as NEW."""
    pairs = [r.partition(":")[::2] for r in renames]
    if any(not old or not new for old, new in pairs):
        raise StoreError(f"--rename-from {' '.join(renames)}: expected NAME:NEW")
    return merge_checked(target, source, Checks(run_problem, same_matrix, link_problem, dict(pairs), skip_invalid,
                                                signing_key))
