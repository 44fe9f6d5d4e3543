"""ablate: find out, with evidence, which training changes help a small language model."""

__version__ = "0.1.0"
