"""A matrix's seeds as a range, `seeds: {min: 3, max: 12}`, and what the verdicts read of a
stored matrix: its smallest effect of interest, how many looks its seed range allows, and the
metric (and its direction) of a matrix of your own trainer."""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from ..training.config import MIN_EFFECT
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


def verdict_settings(yaml_text: str | None) -> tuple[float, int]:
    """(min_effect, looks) of a stored matrix text: its `min_effect` (else the default) and the
    looks its `seeds: {min, max}` allows (else 1). A text that cannot be read has the defaults."""
    try:
        raw = read_mapping(yaml_text if isinstance(yaml_text, str) else "")  # pandas: nan
    except YAMLProblem:
        return MIN_EFFECT, 1
    min_effect, seeds = raw.get("min_effect"), raw.get("seeds")
    try:
        looks = SeedRange.model_validate(seeds).looks if isinstance(seeds, dict) else 1
    except ValueError:
        looks = 1
    usable = isinstance(min_effect, (int, float)) and not isinstance(min_effect, bool) and min_effect > 0
    return (float(min_effect) if usable else MIN_EFFECT), looks


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
