"""Loops that are not unrolled (issue 22): an LSTM language model's loss and gradient over T
characters, its time loop written with ``scan``, in fresh processes with an empty cache.

    python -m benchmarks.scan                    # markdown tables on stdout
    python -m benchmarks.scan --write-results    # also benchmarks/SCAN.md

- jitgrad (``jg.lax.scan``; the default background compile, and ``JITGRAD_COMPILE=sync``),
  JAX (``jax.lax.scan`` under ``jit(value_and_grad)``), PyTorch eager and ``torch.compile``
  (a Python loop: they have no scan): the first call and the warm time (median) at T = 100;
- jitgrad's sync first call (trace, compile, run) at T = 10 and T = 1000, and its background
  first call (trace, then the interpreter) at T = 5, 20 and 50 (issue 20's unrolled RNN grew
  with T; a scan does not);
- the peak memory of jitgrad's gradient call at T = 1000 with and without ``jg.checkpoint``
  on the step (``tracemalloc``: NumPy's allocations during one warm call).
float32, vocabulary 32, hidden 128, batch 32.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VOCAB, HIDDEN, BATCH = 32, 128, 32


def data(steps, seed=0):
    rng = np.random.default_rng(seed)
    chars = rng.integers(0, VOCAB, (steps + 1, BATCH))
    onehot = np.eye(VOCAB, dtype=np.float32)[chars]
    params = [rng.standard_normal(s).astype(np.float32) * 0.1 for s in
              [(VOCAB, 4 * HIDDEN), (HIDDEN, 4 * HIDDEN), (4 * HIDDEN,), (HIDDEN, VOCAB), (VOCAB,)]]
    return params, onehot[:-1], onehot[1:]


def lstm_step(xp, params, carry, x, y):
    """One step of the model in NumPy-style code on namespace ``xp``: ((h, c), its loss)."""
    wx, wh, b, wo, bo = params
    h, c = carry
    z = x @ wx + h @ wh + b
    n = HIDDEN
    sigmoid = lambda v: 0.5 * (xp.tanh(0.5 * v) + 1.0)  # noqa: E731
    c = sigmoid(z[:, n:2 * n]) * c + sigmoid(z[:, :n]) * xp.tanh(z[:, 3 * n:])
    h = sigmoid(z[:, 2 * n:3 * n]) * xp.tanh(c)
    logits = h @ wo + bo
    top = xp.amax(logits, axis=1, keepdims=True)
    logp = logits - top - xp.log(xp.sum(xp.exp(logits - top), axis=1, keepdims=True))
    return (h, c), -xp.sum(logp * y)


def jitgrad_loss(checkpoint=False):
    import jitgrad as jg

    def loss(params, xs, ys):
        def step(carry, inputs):
            return lstm_step(np, params, carry, *inputs)
        zero = np.zeros((BATCH, HIDDEN), np.float32)
        body = jg.checkpoint(step) if checkpoint else step
        _, losses = jg.lax.scan(body, (zero, zero), (xs, ys))
        return np.sum(losses) / np.float32(xs.shape[0] * BATCH)
    return jg.jit_grad(loss)


def jax_loss():
    import jax
    import jax.numpy as jnp

    def loss(params, xs, ys):
        zero = jnp.zeros((BATCH, HIDDEN), jnp.float32)
        _, losses = jax.lax.scan(lambda carry, inp: lstm_step(jnp, params, carry, *inp), (zero, zero), (xs, ys))
        return jnp.sum(losses) / (xs.shape[0] * BATCH)
    f = jax.jit(jax.value_and_grad(loss))
    return lambda *a: jax.block_until_ready(f(*a))


def torch_loss(compiled):
    import torch

    def loss(params, xs, ys):
        h = c = torch.zeros((BATCH, HIDDEN))
        total = 0.0
        for t in range(xs.shape[0]):
            (h, c), step_loss = lstm_step(torch, params, (h, c), xs[t], ys[t])
            total = total + step_loss
        return total / (xs.shape[0] * BATCH)
    fn = torch.compile(loss) if compiled else loss

    def value_and_grad(params, xs, ys):
        ps = [torch.tensor(p, requires_grad=True) for p in params]
        value = fn(ps, torch.from_numpy(xs), torch.from_numpy(ys))
        value.backward()
        return value.item(), [p.grad for p in ps]
    return value_and_grad


def child(framework, steps, repeats, checkpoint, memory):
    """One measurement in this (fresh) process: JSON on stdout."""
    params, xs, ys = data(steps)
    make = {"jitgrad": lambda: jitgrad_loss(checkpoint), "jax": jax_loss,
            "torch": lambda: torch_loss(False), "torch.compile": lambda: torch_loss(True)}[framework]
    fn = make()
    start = time.perf_counter()
    fn(params, xs, ys)
    result = {"first": time.perf_counter() - start}
    if framework == "jitgrad" and getattr(fn, "compiling", False):
        fn.wait_compiled()
        result["compiled_after"] = time.perf_counter() - start
    fn(params, xs, ys)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(params, xs, ys)
        times.append(time.perf_counter() - start)
    result["warm"] = float(np.median(times))
    if memory:
        tracemalloc.start()
        fn(params, xs, ys)
        result["peak_bytes"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    print(json.dumps(result))


def _fresh(framework, steps, repeats=10, checkpoint=False, memory=False, env=None, timeout=600):
    args = [sys.executable, "-m", "benchmarks.scan", "--child", framework, "--steps", str(steps),
            "--repeats", str(repeats)] + ["--checkpoint"] * checkpoint + ["--memory"] * memory
    with tempfile.TemporaryDirectory() as cache:
        environment = {**os.environ, "JITGRAD_CACHE_DIR": cache, "JITGRAD_LOG": "quiet", **(env or {})}
        try:
            done = subprocess.run(args, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"error": f"over {timeout} s"}
    if done.returncode:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _ms(seconds):
    return "–" if seconds is None else f"{seconds * 1e3:.1f}"


def _s(seconds):
    return "–" if seconds is None else f"{seconds:.2f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--checkpoint", action="store_true")
    parser.add_argument("--memory", action="store_true")
    parser.add_argument("--frameworks", default="jitgrad,jax,torch,torch.compile")
    parser.add_argument("--write-results", action="store_true")
    opts = parser.parse_args()
    if opts.child:
        return child(opts.child, opts.steps, opts.repeats, opts.checkpoint, opts.memory)
    rows = ["| framework | first call (s) | compiled after (s) | warm (ms) |", "|---|---|---|---|"]
    for name in opts.frameworks.split(","):
        modes = [("background", {}), ("sync", {"JITGRAD_COMPILE": "sync"})] if name == "jitgrad" else [("", {})]
        for mode, env in modes:
            r = _fresh(name, opts.steps, opts.repeats, env=env)
            label = f"{name} ({mode})" if mode else name
            if "error" in r:
                rows.append(f"| {label} | {r['error']} | | |")
            else:
                rows.append(f"| {label} | {_s(r['first'])} | {_s(r.get('compiled_after'))} | {_ms(r['warm'])} |")
        print("\n".join(rows[-len(modes):]), flush=True)
    lengths = ["| T | sync first call (s) | its compile: first call - warm (s) | background first call (s) |",
               "|---|---|---|---|"]
    for steps in (5, 10, 20, 50, 1000):
        sync = _fresh("jitgrad", steps, 3, env={"JITGRAD_COMPILE": "sync"}) if steps in (10, 1000) else {}
        background = _fresh("jitgrad", steps, 3) if steps != 1000 else {}
        compile_time = sync["first"] - sync["warm"] if "first" in sync else None
        lengths.append(f"| {steps} | {_s(sync.get('first'))} | {_s(compile_time)} | {_s(background.get('first'))} |")
        print(lengths[-1], flush=True)
    memory = ["| T = 1000 | peak memory of a gradient call (MB) | warm (ms) |", "|---|---|---|"]
    for checkpoint in (False, True):
        r = _fresh("jitgrad", 1000, 3, checkpoint=checkpoint, memory=True, env={"JITGRAD_COMPILE": "sync"})
        memory.append(f"| {'with' if checkpoint else 'without'} checkpoint | "
                      f"{r.get('peak_bytes', 0) / 2 ** 20:.1f} | {_ms(r.get('warm'))} |")
        print(memory[-1], flush=True)
    text = "\n\n".join(["\n".join(rows), "\n".join(lengths), "\n".join(memory)])
    print(text)
    if opts.write_results:
        (ROOT / "benchmarks" / "SCAN.md").write_text(
            "# Loops with `scan` (issue 22)\n\nWritten by `python -m benchmarks.scan --write-results`: "
            f"an LSTM language model (float32, vocabulary {VOCAB}, hidden {HIDDEN}, batch {BATCH}), loss and "
            f"gradient over T = {opts.steps} steps unless said; fresh processes, empty caches.\n\n{text}\n")


if __name__ == "__main__":
    main()
