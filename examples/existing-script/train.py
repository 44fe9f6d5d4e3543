"""A training script as you might find it: it knows nothing of ablate.

Written for ablate's tests in the style of nanoGPT's train.py: module-level settings that
`--key=value` flags override (its "configurator"), a hard-coded seed, `step N: train loss X,
val loss Y` lines every `eval_interval` steps, and a checkpoint in `out_dir`. It fits a linear
model to noisy synthetic data with minibatch SGD, so a run takes a fraction of a second.

    python train.py --learning_rate=0.2 --out_dir=out
"""

import ast
import json
import os
import random
import sys

# -----------------------------------------------------------------------------
# settings, each overridable as --name=value
out_dir = "out"
learning_rate = 0.05
batch_size = 16
weight_decay = 0.0
max_iters = 200
eval_interval = 50
seed = 1337
# -----------------------------------------------------------------------------
for arg in sys.argv[1:]:  # the configurator: --key=value, the value read as a Python literal
    key, _, value = arg.removeprefix("--").partition("=")
    if key not in globals():
        raise SystemExit(f"unknown config key: {key}")
    try:
        value = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        pass  # a plain string
    globals()[key] = value
    print(f"overriding: {key} = {value!r}")

random.seed(seed)
true_w = [0.5, -1.2, 2.0, 0.3]
def sample():
    x = [random.gauss(0, 1) for _ in true_w]
    return x, sum(a * b for a, b in zip(x, true_w)) + random.gauss(0, 0.5)
train_set = [sample() for _ in range(2000)]
val_set = [sample() for _ in range(500)]
w = [0.0] * len(true_w)

def loss(data):
    return sum((sum(a * b for a, b in zip(x, w)) - y) ** 2 for x, y in data) / len(data)

for it in range(1, max_iters + 1):
    batch = random.sample(train_set, batch_size)
    grad = [0.0] * len(w)
    for x, y in batch:
        err = sum(a * b for a, b in zip(x, w)) - y
        grad = [g + 2 * err * a / batch_size for g, a in zip(grad, x)]
    w = [wi - learning_rate * (g + weight_decay * wi) for wi, g in zip(w, grad)]
    if it % eval_interval == 0:
        print(f"step {it}: train loss {loss(batch):.4f}, val loss {loss(val_set):.4f}", flush=True)
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "ckpt.json"), "w") as f:
            json.dump({"iter": it, "w": w}, f)
