"""A tiny numpy MLP regressor on data.csv: ablate's example of your own training script.

Run by itself it prints one JSON line per evaluation, which is all `ablate run` needs of a
command trainer:

    python train.py --lr 0.05 --hidden 16 --seed 0

`main(config, report)` is the same training as an entry point (`trainer: {entry: train:main}`):
ablate calls it with the parameters and the seed, and `report` records each evaluation.
"""

import argparse
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def main(config: dict, report) -> dict:
    data = np.loadtxt(HERE / "data.csv", delimiter=",", skiprows=1)
    x, y = data[:, :2], data[:, 2:]
    train_x, train_y, val_x, val_y = x[:480], y[:480], x[480:], y[480:]  # a fixed split
    rng = np.random.default_rng(config["seed"])  # the seed: initialisation and batch order
    hidden, lr, decay = config["hidden"], config["lr"], config["weight_decay"]
    w1 = rng.standard_normal((2, hidden)) / np.sqrt(2)
    b1 = np.zeros(hidden)
    w2 = rng.standard_normal((hidden, 1)) / np.sqrt(hidden)
    b2 = np.zeros(1)

    def predict(inputs):
        h = np.tanh(inputs @ w1 + b1)
        return h, h @ w2 + b2

    for epoch in range(1, config["epochs"] + 1):
        order = rng.permutation(len(train_x))
        for start in range(0, len(order), config["batch_size"]):
            batch = order[start:start + config["batch_size"]]
            h, out = predict(train_x[batch])
            grad_out = 2 * (out - train_y[batch]) / len(batch)
            grad_h = (grad_out @ w2.T) * (1 - h ** 2)
            w2 -= lr * (h.T @ grad_out + decay * w2)
            b2 -= lr * grad_out.sum(0)
            w1 -= lr * (train_x[batch].T @ grad_h + decay * w1)
            b1 -= lr * grad_h.sum(0)
        if epoch % 10 == 0:
            train_loss = float(np.mean((predict(train_x)[1] - train_y) ** 2))
            val_loss = float(np.mean((predict(val_x)[1] - val_y) ** 2))
            report(epoch, val_loss=val_loss, train_loss=train_loss)
    return {"param_count": w1.size + b1.size + w2.size + b2.size}


if __name__ == "__main__":
    import ablate

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--hidden", type=int, default=16)
    parser.add_argument("--weight_decay", type=float, default=0.0)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    main(vars(parser.parse_args()), ablate.report_eval)
