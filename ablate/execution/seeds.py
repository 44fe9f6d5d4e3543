"""A matrix's seeds as a range, `seeds: {min: 3, max: 12}`, and what the verdicts read of a
stored matrix: its plan (smallest effect of interest, how many looks its seed range allows) and
the metric (and its direction) of a matrix of your own trainer."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Annotated, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from ..training.config import COST_MIN_EFFECT, MIN_EFFECT
from .safe_yaml import YAMLProblem, read_mapping


class SeedRange(BaseModel):
    """`seeds: {min: 3, max: 12}`: the first round has `min` seeds (the base seed and those after
    it), and rounds add one seed at a time up to `max`."""

    model_config = ConfigDict(extra="forbid", strict=True)
    min: int = Field(ge=2)  # a paired interval needs two seeds
    max: int

    @model_validator(mode="after")
    def _ordered(self) -> "SeedRange":
        if self.max < self.min:
            raise ValueError(f"max ({self.max}) is below min ({self.min})")
        return self

    @property
    def looks(self) -> int:
        """Every seed count from min to max is a look at which a verdict may be reported."""
        return self.max - self.min + 1

    def values(self, first: int) -> list[int]:
        """The seeds themselves: `first` (the base config's seed) and the `max` − 1 after it."""
        return [first + i for i in range(self.max)]


FAMILIES = ("comparison", "experiment")  # what one interval level covers


@dataclass(frozen=True)
class VerdictPlan:
    """What a verdict's validity rests on, fixed before the data: δ, the seed plan and the looks
    it allows. Stored with the experiment when it first runs (`experiments.plan`), so editing
    the matrix afterwards cannot change a verdict silently."""

    min_effect: float = MIN_EFFECT
    looks: int = 1  # seed counts at which a verdict may be read
    first: int = 2  # seeds in the first round (a seed range's min)
    budget: int | None = None  # the most seeds a configuration may get (a seed range's max)
    seeds: str = "as listed"  # the plan in words: "{min: 3, max: 12}" or "3 listed"
    family: str = "comparison"  # each comparison's own 95 %, or simultaneous over the experiment's
    after_data: bool = False  # stored at a later run than the experiment's first data: not pre-registered
    cost_min_effect: float = COST_MIN_EFFECT  # relative change of time per step or peak memory that matters
    also: dict = dataclasses.field(default_factory=dict)  # secondary metrics: {name: {"goal", "min_effect"}}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def counts(self) -> set[int]:
        """The seed counts at which this plan lets a verdict be read."""
        return set(range(self.first, (self.budget or self.first) + 1)) if self.looks > 1 else {self.budget or self.first}

    @classmethod
    def from_dict(cls, d: object) -> "VerdictPlan | None":
        """The stored plan; None when there is none or it is not one (a damaged row)."""
        if not isinstance(d, dict):
            return None
        try:
            plan = cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})
        except TypeError:
            return None
        ok = isinstance(plan.min_effect, (int, float)) and plan.min_effect > 0 and isinstance(plan.looks, int) \
            and plan.looks >= 1 and isinstance(plan.first, int) and plan.family in FAMILIES \
            and isinstance(plan.after_data, bool) and isinstance(plan.cost_min_effect, (int, float)) \
            and 0 < plan.cost_min_effect < 1 and isinstance(plan.also, dict) and all(
                isinstance(m, dict) and m.get("goal") in ("minimize", "maximize")
                and isinstance(m.get("min_effect"), (int, float)) and m["min_effect"] > 0 for m in plan.also.values())
        return plan if ok else None


def verdict_plan(yaml_text: str | None) -> VerdictPlan:
    """The plan a matrix text states: its `min_effect` (else the default) and the looks its
    `seeds: {min, max}` allows (else one). A text that cannot be read has the defaults."""
    try:
        raw = read_mapping(yaml_text if isinstance(yaml_text, str) else "")  # pandas: nan
    except YAMLProblem:
        return VerdictPlan()
    min_effect, seeds = raw.get("min_effect"), raw.get("seeds")
    usable = isinstance(min_effect, (int, float)) and not isinstance(min_effect, bool) and min_effect > 0
    delta = float(min_effect) if usable else MIN_EFFECT
    family = raw.get("family") if raw.get("family") in FAMILIES else "comparison"
    cost = raw.get("cost_min_effect")
    cost = float(cost) if isinstance(cost, (int, float)) and not isinstance(cost, bool) and 0 < cost < 1 else COST_MIN_EFFECT
    try:
        seed_range = SeedRange.model_validate(seeds) if isinstance(seeds, dict) else None
    except ValueError:
        seed_range = None
    also = secondary_metrics(raw)
    if seed_range is not None:
        return VerdictPlan(delta, seed_range.looks, seed_range.min, seed_range.max,
                           f"{{min: {seed_range.min}, max: {seed_range.max}}}", family, cost_min_effect=cost, also=also)
    count = len(seeds) if isinstance(seeds, list) and seeds else 1
    return VerdictPlan(delta, 1, count, count, f"{count} listed", family, cost_min_effect=cost, also=also)


def secondary_metrics(raw: dict) -> dict:
    """`metric.also` of a matrix (already validated when it ran): {name: {goal, min_effect}}."""
    metric = raw.get("metric") if isinstance(raw.get("metric"), dict) else {}
    also = metric.get("also") if isinstance(metric.get("also"), list) else []
    return {str(m["name"]): {"goal": "maximize" if m.get("goal") == "maximize" else "minimize",
                             "min_effect": float(m["min_effect"])}
            for m in also if isinstance(m, dict) and "name" in m and isinstance(m.get("min_effect"), (int, float))
            and not isinstance(m.get("min_effect"), bool) and m["min_effect"] > 0}


def own_metric(yaml_text: str | None) -> tuple[str, str] | None:
    """(name, goal) of the metric a stored matrix of your own trainer ranks by (`metric:`, else
    val_loss to minimize); None for Mainrun's matrices, whose report knows its metrics."""
    try:
        raw = read_mapping(yaml_text if isinstance(yaml_text, str) else "")
    except YAMLProblem:
        return None
    if not isinstance(raw.get("trainer"), dict):
        return None
    metric = raw.get("metric") if isinstance(raw.get("metric"), dict) else {}
    return str(metric.get("name", "val_loss")), "maximize" if metric.get("goal") == "maximize" else "minimize"


def untagged(loc: tuple) -> tuple:
    """A validation error's location without the tag `Seeds` adds: seeds[1], not seeds.list[1]."""
    return loc[:1] + loc[2:] if loc[:1] == ("seeds",) and loc[1:2] in (("list",), ("range",)) else loc


# `seeds:` in a matrix: a list of seeds, or a mapping {min, max}; validated as the one its shape is,
# so an error names that one alone
Seeds = Annotated[Union[Annotated[list[int], Tag("list")], Annotated[SeedRange, Tag("range")]],
                  Discriminator(lambda v: "range" if isinstance(v, (dict, SeedRange)) else "list")]
