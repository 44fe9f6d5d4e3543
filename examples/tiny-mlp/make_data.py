"""Writes data.csv, the example's data set: 600 points of a smooth 2-D function plus noise,
drawn from a fixed seed (run again, it writes the same file)."""

import numpy as np

rng = np.random.default_rng(2024)
x = rng.uniform(-1.0, 1.0, size=(600, 2))
y = np.sin(3.0 * x[:, 0]) + 0.5 * x[:, 1] ** 2 + 0.1 * rng.standard_normal(600)
np.savetxt("data.csv", np.column_stack([x, y]), delimiter=",", fmt="%.6f", header="x1,x2,y", comments="")
