"""One colour language for every output: the terminal, the HTML page and the plots.

Green and red mean only that a row's own change helps or hurts (in leave-one-out the row is the
removal it names: `−ema` "better" is green everywhere, since removing EMA helps); grey that it
does not matter; one amber for every verdict that decides nothing (inconclusive, noise unknown,
seeds identical, no data); purple for a comparison that fails. Configurations in curve plots take
colours that are none of these, so a curve never reads as a verdict.
"""

from __future__ import annotations

from collections.abc import Iterable

from .stats import FAILS

HELPS, HURTS, NEGLIGIBLE, UNDECIDED, FAILED = "#1a7f37", "#b42318", "#57606a", "#9a6700", "#a626a4"
MEANING = {"better": HELPS, "faster": HELPS, "less memory": HELPS,
           "worse": HURTS, "slower": HURTS, "more memory": HURTS,
           "negligible": NEGLIGIBLE, "same speed": NEGLIGIBLE, "same memory": NEGLIGIBLE,
           FAILS: FAILED}
CLASSES = {HELPS: "v-better", HURTS: "v-worse", NEGLIGIBLE: "v-negligible", UNDECIDED: "v-undecided",
           FAILED: "v-fails"}
# Curves: tab10 and tab20b without their greens, reds and olive (which reads as green).
CONFIGURATIONS = ("#1f77b4", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf",
                  "#393b79", "#5254a3", "#6b6ecf", "#9c9ede", "#8c6d31", "#bd9e39", "#e7ba52",
                  "#e7cb94", "#7b4173", "#a55194", "#ce6dbd", "#de9ed6")
BASELINE = "#333333"


def configuration_colours(names: Iterable[str]) -> dict[str, str]:
    """One colour per configuration of an experiment, the same in every plot of it (its absolute
    and its delta curves, on the page and in the live view): by its place in `names` (the
    ranking: the best get the most distinct colours), the baseline dark; never a verdict's."""
    others = [n for n in dict.fromkeys(names) if n != "baseline"]
    return {"baseline": BASELINE, **{n: CONFIGURATIONS[i % len(CONFIGURATIONS)] for i, n in enumerate(others)}}


def colour(verdict: object) -> str:
    """A verdict's colour by what it says: its words up to a qualifier ("inconclusive (~13
    seeds)", "faster 1.31× (1.22–1.40×)"); anything that decides nothing is amber."""
    text = str(verdict)
    for words, hex_colour in MEANING.items():
        if text == words or text.startswith(words + " "):
            return hex_colour
    return UNDECIDED


def css_class(verdict: object) -> str:
    """The HTML class of a verdict's colour (the page's stylesheet is `css()`)."""
    return CLASSES[colour(verdict)]


def css() -> str:
    return " ".join(f".{name} {{ color: {hex_colour}; }}" for hex_colour, name in CLASSES.items())
