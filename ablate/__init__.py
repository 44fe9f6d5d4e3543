"""ablate: find out, with evidence, which training changes help a small language model."""

__version__ = "0.1.0"


def report_eval(step: int, **metrics: float) -> None:
    """One evaluation of your own training script, printed as the JSON line `ablate run` reads
    from a command trainer's stdout: `ablate.report_eval(100, val_loss=2.31)`."""
    import json
    import sys

    sys.stdout.write(json.dumps({"step": step, **metrics}) + "\n")
    sys.stdout.flush()
