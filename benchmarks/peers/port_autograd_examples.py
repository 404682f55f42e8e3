"""Port HIPS autograd's example programs to jitgrad by rewriting their imports only, run each
ported program and the original (on autograd) in fresh processes, and compare what they print.

    python benchmarks/peers/port_autograd_examples.py AUTOGRAD/examples [--out DIR] [--only a.py,b.py]

The import map (nothing else in a program changes):
``autograd.numpy`` (``.random``, ``.linalg``) -> NumPy; ``from autograd import grad/value_and_grad``
-> jitgrad's; the other differential operators (``elementwise_grad``, ``jacobian``,
``hessian``) -> ``autograd_adapter``'s, built on ``jitgrad.vjp``; ``autograd.scipy.X`` ->
``jitgrad.scipy.X``. ``autograd.misc`` (optimizers, flatten) is pure NumPy around the gradient
function it is handed and stays. Examples that need a download (MNIST), define primitives or
read autograd's tracer are listed in ``SKIPPED`` with the reason.
"""
import argparse
import os
import pathlib
import re
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
JITGRAD_OPERATORS = {"grad", "value_and_grad"}

SKIPPED = {
    "convnet.py": "MNIST download", "generative_adversarial_net.py": "MNIST download",
    "variational_autoencoder.py": "MNIST download", "neural_net.py": "MNIST download",
    "data.py": "a helper module", "data_mnist.py": "a helper module",
    "define_gradient.py": "defines an autograd primitive", "fluidsim.py": "defines no gradient to compare",
    "wing.py": "defines no gradient to compare",
    "dot_graph.py": "reads autograd's tracer", "print_trace.py": "reads autograd's tracer",
    "ode_net.py": "differentiates through scipy.integrate.odeint",
    "lstm.py": "reads its own source file as training text", "rnn.py": "reads its own source file as training text",
}


def _names(clause):
    return [n.strip() for n in clause.split(",") if n.strip()]


def port_line(line):
    """One line with autograd's imports rewritten (others as they are)."""
    rules = [
        (r"^(\s*)import autograd\.numpy\.random as (\w+)", r"\1import numpy.random as \2"),
        (r"^(\s*)import autograd\.numpy as (\w+)", r"\1import numpy as \2"),
        (r"^(\s*)from autograd\.numpy(\.\w+)? import (.*)", r"\1from numpy\2 import \3"),
        (r"^(\s*)import autograd\.scipy\.stats\.(\w+) as (\w+)", r"\1from jitgrad.scipy.stats import \2 as \3"),
        (r"^(\s*)from autograd\.scipy\.(\w+) import (.*)", r"\1from jitgrad.scipy.\2 import \3"),
        (r"^(\s*)from autograd\.test_util import (.*)", r"\1from autograd_adapter import \2"),
    ]
    for pattern, replacement in rules:
        if re.match(pattern, line):
            return re.sub(pattern, replacement, line)
    m = re.match(r"^(\s*)from autograd import (.*)", line)
    if m:
        indent, names = m.group(1), _names(m.group(2))
        ours = [n for n in names if n.split(" as ")[0].strip() in JITGRAD_OPERATORS]
        rest = [n for n in names if n not in ours]
        lines = ([f"{indent}from jitgrad import {', '.join(ours)}"] if ours else []) + \
                ([f"{indent}from autograd_adapter import {', '.join(rest)}"] if rest else [])
        return "\n".join(lines) + "\n"
    return line


def port(source):
    return "".join(port_line(line) for line in source.splitlines(keepends=True))


def _run(path, cwd, env, timeout):
    start = time.time()
    try:
        done = subprocess.run([sys.executable, path.name], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=timeout)
        ok, out = done.returncode == 0, done.stdout
        error = "" if ok else (done.stderr.strip().splitlines() or ["failed"])[-1][:160]
    except subprocess.TimeoutExpired as e:
        ok, out, error = False, e.stdout or "", f"ran past {timeout} s"
        out = out.decode() if isinstance(out, bytes) else out
    return ok, out, error, time.time() - start


_NUMBER = re.compile(r"-?\d+\.\d*(?:[eE][-+]?\d+)?|-?\d+[eE][-+]?\d+")


def agreement(a, b):
    """The largest relative difference between the numbers two runs printed (None if none)."""
    xs, ys = [float(v) for v in _NUMBER.findall(a)], [float(v) for v in _NUMBER.findall(b)]
    if not xs or len(xs) != len(ys):
        return None if not xs and not ys else float("inf")
    return max(abs(x - y) / max(abs(x), abs(y), 1e-12) for x, y in zip(xs, ys))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("examples", help="autograd's examples/ folder")
    parser.add_argument("--out", default=None, help="where the ported copies go (default: a temporary folder)")
    parser.add_argument("--only", default=None, help="comma-separated file names")
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
    src = pathlib.Path(args.examples).resolve()
    out = pathlib.Path(args.out or __import__("tempfile").mkdtemp(prefix="ported-"))
    out.mkdir(parents=True, exist_ok=True)
    for path in src.glob("*.py"):  # every one: examples import each other (and read their own text)
        (out / path.name).write_text(port(path.read_text()))
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONPATH=os.pathsep.join(
        [str(HERE), str(HERE.parents[1]), os.environ.get("PYTHONPATH", "")]))
    files = sorted(p for p in src.glob("*.py") if p.name != "__init__.py")
    if args.only:
        files = [p for p in files if p.name in args.only.split(",")]
    ran = matched = 0
    for path in files:
        if path.name in SKIPPED:
            print(f"{path.name:36} skipped: {SKIPPED[path.name]}")
            continue
        ported = out / path.name
        ok, printed, error, seconds = _run(ported, out, env, args.timeout)
        base_ok, base_printed, _, base_seconds = _run(path, src, dict(env, PYTHONPATH=str(src)), args.timeout)
        diff = agreement(printed, base_printed) if ok and base_ok else None
        ran += ok
        matched += ok and diff is not None and diff < 1e-6
        verdict = "ran" if ok else f"FAILED: {error}"
        compared = "" if diff is None else f", printed numbers within {diff:.1e} of autograd's"
        print(f"{path.name:36} {verdict} ({seconds:.1f} s; autograd {base_seconds:.1f} s{compared})")
    print(f"ported examples: {ran} ran, {matched} printed autograd's numbers to 1e-6; copies in {out}")


if __name__ == "__main__":
    main()
