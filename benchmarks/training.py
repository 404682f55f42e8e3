"""Training runs from an empty cache (issue 20's end-to-end target): 100 SGD steps of programs
like HIPS autograd's examples, written once in plain NumPy against a namespace ``xp``, timed in
fresh processes: jitgrad (its default, background compiles; and sync) against autograd.

    python -m benchmarks.training            # all programs, a markdown table on stdout
    python -m benchmarks.training --steps 20 --programs mlp,rnn
    python -m benchmarks.training --neighbours   # a second table: as a user's process runs it

A cell is the total time of the gradient calls (the SGD update and the data are outside it), in
a process that imported its framework beforehand (import time is reported apart). With
``--neighbours``, each cell runs again as in a user's process (``neighbours.py``): a parallel
Numba function and a PyTorch op ran first in it, and another process spins on one core.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .neighbours import BEFORE, run_before, spinner

ROOT = Path(__file__).resolve().parents[1]


def _log_softmax(xp, z):
    z = z - xp.max(z, axis=1, keepdims=True)
    return z - xp.log(xp.sum(xp.exp(z), axis=1, keepdims=True))


def mlp(xp, params, x, onehot):
    """autograd's neural_net example: 784-200-100-10, tanh, log-softmax, L2 penalty."""
    h = x
    for w, b in params[:-1]:
        h = xp.tanh(h @ w + b)
    w, b = params[-1]
    logp = _log_softmax(xp, h @ w + b)
    l2 = sum(xp.sum(w * w) for w, _ in params)
    return -xp.sum(logp * onehot) / x.shape[0] + 1e-4 * l2


def rnn(xp, params, xs, onehots):
    """autograd's rnn example: a tanh RNN over one-hot characters, predicting the next one."""
    wx, wh, b, wo, bo = params
    h = xp.zeros((xs.shape[1], wh.shape[0]))
    loss = 0.0
    for t in range(xs.shape[0]):
        h = xp.tanh(xs[t] @ wx + h @ wh + b)
        loss = loss - xp.sum(_log_softmax(xp, h @ wo + bo) * onehots[t])
    return loss / (xs.shape[0] * xs.shape[1])


def _sigmoid(xp, z):
    return 0.5 * (xp.tanh(0.5 * z) + 1.0)


def lstm(xp, params, xs, onehots):
    """autograd's lstm example: one LSTM layer over one-hot characters."""
    w, b, wo, bo = params
    n, hidden = xs.shape[1], wo.shape[0]
    h, c = xp.zeros((n, hidden)), xp.zeros((n, hidden))
    loss = 0.0
    for t in range(xs.shape[0]):
        z = xp.concatenate([xs[t], h], axis=1) @ w + b
        i, f, o = (_sigmoid(xp, z[:, k * hidden:(k + 1) * hidden]) for k in range(3))
        c = f * c + i * xp.tanh(z[:, 3 * hidden:])
        h = o * xp.tanh(c)
        loss = loss - xp.sum(_log_softmax(xp, h @ wo + bo) * onehots[t])
    return loss / (xs.shape[0] * n)


def convnet(xp, params, images, onehot):
    """A small convnet in the spirit of autograd's: 5x5 convolution (8 filters, as patches times
    a matrix), relu, 2x2 max pool, dense softmax layer."""
    filters, b, w, bo = params
    n, size = images.shape[0], images.shape[1] - 4
    patches = xp.stack([images[:, i:i + size, j:j + size] for i in range(5) for j in range(5)], axis=-1)
    h = xp.maximum(patches @ filters + b, 0.0)
    pooled = xp.max(h.reshape((n, size // 2, 2, size // 2, 2, filters.shape[1])), axis=(2, 4))
    logp = _log_softmax(xp, pooled.reshape((n, -1)) @ w + bo)
    return -xp.sum(logp * onehot) / n


def _onehot(rng, shape, classes):
    return np.eye(classes)[rng.integers(0, classes, shape)]


def _setup(name, rng):
    """(loss, params, data) of program ``name``, at the sizes of autograd's examples (scaled)."""
    normal = rng.standard_normal
    if name == "mlp":
        sizes = [784, 200, 100, 10]
        params = [(0.1 * normal((m, k)), 0.1 * normal(k)) for m, k in zip(sizes[:-1], sizes[1:])]
        return mlp, params, (normal((256, 784)), _onehot(rng, 256, 10))
    if name in ("rnn", "lstm"):
        steps, batch, vocab, hidden = 30, 16, 64, 100
        xs = _onehot(rng, (steps, batch), vocab)
        targets = np.roll(xs, -1, axis=0)
        if name == "rnn":
            params = [0.1 * normal((vocab, hidden)), 0.1 * normal((hidden, hidden)), np.zeros(hidden),
                      0.1 * normal((hidden, vocab)), np.zeros(vocab)]
            return rnn, params, (xs, targets)
        params = [0.1 * normal((vocab + hidden, 4 * hidden)), np.zeros(4 * hidden),
                  0.1 * normal((hidden, vocab)), np.zeros(vocab)]
        return lstm, params, (xs, targets)
    if name == "convnet":
        params = [0.1 * normal((25, 8)), np.zeros(8), 0.1 * normal((12 * 12 * 8, 10)), np.zeros(10)]
        return convnet, params, (normal((64, 28, 28)), _onehot(rng, 64, 10))
    raise KeyError(name)


PROGRAMS = ("mlp", "rnn", "lstm", "convnet")
FRAMEWORKS = ("jitgrad", "jitgrad-sync", "autograd")


def _gradient_function(framework, loss):
    if framework == "autograd":
        import autograd
        import autograd.numpy as anp
        return autograd.grad(lambda params, *data: loss(anp, params, *data))
    import jitgrad as jg
    return jg.jit(jg.grad(lambda params, *data: loss(np, params, *data)))


def train(framework, name, steps, lr=0.05):
    """Run ``steps`` SGD steps; the times of the gradient calls."""
    os.environ["JITGRAD_COMPILE"] = "sync" if framework == "jitgrad-sync" else "background"
    start = time.perf_counter()
    loss, params, data = _setup(name, np.random.default_rng(0))
    gradient = _gradient_function(framework, loss)
    imported = time.perf_counter() - start
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        grads = gradient(params, *data)
        times.append(time.perf_counter() - t)
        params = [tuple(p - lr * g for p, g in zip(pp, gg)) if isinstance(pp, tuple) else pp - lr * gg
                  for pp, gg in zip(params, grads)]
    final = float(loss(np, params, *data))
    return {"import_s": imported, "first_s": times[0], "total_s": sum(times), "last_ms": 1e3 * times[-1],
            "loss": final}


def _fresh(framework, name, steps, neighbours=False):
    """``train`` in a fresh process with an empty jitgrad cache (``neighbours``: as a user's)."""
    argv = [sys.executable, "-m", "benchmarks.training", "--one", framework, name, str(steps)]
    spinning = spinner(1800) if neighbours else None
    try:
        with tempfile.TemporaryDirectory() as cache:
            env = dict(os.environ, JITGRAD_CACHE_DIR=cache, PYTHONPATH=str(ROOT), JITGRAD_LOG="quiet")
            out = subprocess.run(argv + ["--before"] * neighbours, env=env, capture_output=True, text=True,
                                 timeout=1800, cwd=ROOT)
    finally:
        if spinning is not None:
            spinning.kill()
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
    return json.loads(out.stdout.splitlines()[-1])


def _table(title, frameworks, programs, steps, neighbours):
    lines = [title, "", "| program | " + " | ".join(frameworks) + " | jitgrad / autograd |",
             "|---|" + "---|" * (len(frameworks) + 1)]
    print("\n".join(lines), flush=True)
    for name in programs:
        cells = {f: _fresh(f, name, steps, neighbours) for f in frameworks}
        row = [("error: " + c["error"]) if "error" in c else
               f"{c['total_s']:.2f} ({c['first_s']:.2f}; {c['last_ms']:.1f})" for c in cells.values()]
        ratio = "–"
        if "total_s" in cells.get("jitgrad", {}) and "total_s" in cells.get("autograd", {}):
            ratio = f"{cells['jitgrad']['total_s'] / cells['autograd']['total_s']:.2f}x"
        lines.append(f"| {name} | " + " | ".join(row) + f" | {ratio} |")
        print(lines[-1], flush=True)
    return lines + [""]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--programs", default=",".join(PROGRAMS))
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS))
    parser.add_argument("--write-results", action="store_true", help="also write benchmarks/TRAINING.md")
    parser.add_argument("--neighbours", action="store_true",
                        help="a second table: Numba and PyTorch ran first in the process, another process spins")
    parser.add_argument("--one", nargs=3, metavar=("FRAMEWORK", "PROGRAM", "STEPS"), help=argparse.SUPPRESS)
    parser.add_argument("--before", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        framework, name, steps = args.one
        if args.before:
            run_before(BEFORE)
        print(json.dumps(train(framework, name, int(steps))))
        return
    lines = []
    for neighbours in (False, True)[:1 + args.neighbours]:
        title = ("As a user's process runs it: Numba and PyTorch ran first in it, another process spins "
                 "on one core. " if neighbours else "") + f"{args.steps} SGD steps from an empty cache, fresh " \
            "process per cell: total gradient time s (first call s; last step ms)"
        lines += _table(title, args.frameworks.split(","), args.programs.split(","), args.steps, neighbours)
    if args.write_results:
        page = ["# Training runs from an empty cache", "",
                f"`python -m benchmarks.training --write-results{' --neighbours' * args.neighbours}`, "
                f"{time.strftime('%Y-%m-%d')}, "
                f"{os.cpu_count()} cores. " + __doc__.split("\n\n")[0].replace("\n", " "), "", *lines, ""]
        (ROOT / "benchmarks" / "TRAINING.md").write_text("\n".join(page))


if __name__ == "__main__":
    main()
