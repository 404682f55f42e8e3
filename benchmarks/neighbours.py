"""Co-residence: jitgrad and NumPy by hand in the conditions of a user's process (SPEC 6.2).

The warm phase gives each framework a process of its own, which hides what neighbours do to
thread pools. Here NumPy by hand and jitgrad[cpu] run in *one* worker process, under three
conditions, each in a fresh worker:

- ``alone``: nothing else ran in the process;
- ``numba+torch first``: a parallel ``@numba.njit`` function and a PyTorch op ran before
  jitgrad was imported (their thread pools started first, with their own settings);
- ``busy core``: as ``alone``, while another process spins on one core (a child of the worker, as
  a data loader or a second Dask worker would be: in the worker's session, so the kernel's
  autogroup scheduling shares the cores among threads, not sessions).

The check (``check``): on ``TARGET_WORKLOADS``, jitgrad's warm time with numba+torch first is
within ``NEIGHBOUR_LIMIT`` of alone, and in every condition within ``NUMPY_LIMIT`` of NumPy by
hand measured in the same process, each the best median of ``ROUNDS`` interleaved workers.
``python -m benchmarks --neighbours`` reports it and exits with status 3 when it fails.
"""
import json
import os
import subprocess
import sys
import time

import numpy as np

CONDITIONS = {"alone": ((), False), "numba+torch first": (("numba", "torch"), False), "busy core": ((), True)}
FRAMEWORKS = ("numpy", "jitgrad[cpu]")
TARGET_WORKLOADS = ("mlp2", "softmax_xent", "layernorm_tanh", "mlp_train")
NEIGHBOUR_LIMIT, NUMPY_LIMIT = 1.25, 1.2
ROUNDS = 2


def _parallel_numba():
    """A user's own parallel Numba function: starts Numba's threading layer (OpenMP where it can)."""
    import numba

    @numba.njit(parallel=True)
    def total(a):
        s = 0.0
        for i in numba.prange(a.shape[0]):
            s += a[i]
        return s
    total(np.ones(1 << 16))


def _torch_op():
    """Any PyTorch op: starts torch's intra-op pool (its own OpenMP runtime)."""
    import torch
    torch.ones(3).sum()


BEFORE = {"numba": _parallel_numba, "torch": _torch_op}


def run_before(names):
    for name in names:
        BEFORE[name]()


def spinner(seconds):
    """Another process keeping one core busy for at most ``seconds`` (stop it with ``.kill()``)."""
    code = f"import time\nend = time.time() + {seconds}\nwhile time.time() < end:\n    pass\n"
    process = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL)
    time.sleep(0.2)  # running before the first measurement
    return process


def phase(a, names, tmp, clock, results, run, rounds=ROUNDS):
    """Run one ``together`` worker per condition (``run(argv, log_path)``, the runner's, gives
    ``(rc, timed_out, log tail)``), the conditions interleaved ``rounds`` times; each cell keeps its
    best median (``warm_ms``) and every round's (``warm_ms_rounds``): on a shared machine, load that
    comes and goes would otherwise decide the ratios between workers. Results in
    ``results["neighbours"]``."""
    names = [n for n in names if n in TARGET_WORKLOADS] or names
    got = results["neighbours"] = {"workloads": names, "rounds": rounds, "conditions": {c: {} for c in CONDITIONS}}
    for r in range(rounds):
        for k, (condition, (before, busy)) in enumerate(CONDITIONS.items()):
            path = tmp / f"together-{r}-{k}.json"
            argv = ["together", "--framework", ",".join(FRAMEWORKS), "--workloads", ",".join(names),
                    "--json", str(path), "--repeats", str(max(a.repeats, 10)), "--min-time", str(max(a.min_time, 1.0)),
                    "--max-time", str(a.max_time), "--threads", str(a.threads or os.cpu_count()),
                    "--data", str(tmp / "data")]
            argv += [f"--before={','.join(before)}"] * bool(before) + ["--busy"] * busy + ["--small"] * a.small
            rc, timed_out, tail = run(argv, tmp / f"together-{r}-{k}.log")
            cells = json.loads(path.read_text())["cells"] if path.exists() else {}
            failed = {"status": "error", "error": f"worker exited {rc}: {tail[-300:]}"}
            for name in names:
                for fw in FRAMEWORKS:
                    cell = cells.get(name, {}).get(fw) or dict(failed)
                    _merge(got["conditions"][condition].setdefault(name, {}), fw, cell)
            clock.log(f"neighbours, round {r + 1}, {condition}: " + ", ".join(
                f"{n} " + " / ".join(f"{c.get(fw, {}).get('warm_ms', float('nan')):.2f}" for fw in FRAMEWORKS)
                for n, c in cells.items()) + " ms (numpy / jitgrad)")


def _merge(cells, fw, cell):
    """Keep the best median of the rounds in ``cells[fw]``."""
    old = cells.get(fw)
    rounds = (old or {}).get("warm_ms_rounds", []) + ([cell["warm_ms"]] if "warm_ms" in cell else [])
    if old is None or "warm_ms" in cell and cell["warm_ms"] < old.get("warm_ms", float("inf")):
        cells[fw] = cell
    cells[fw]["warm_ms_rounds"] = rounds


def check(neighbours):
    """``[(workload, what, ratio, limit, passed)]`` for the SPEC 6.2 targets."""
    rows, conditions = [], neighbours["conditions"]

    def warm(condition, name, fw):
        return conditions.get(condition, {}).get(name, {}).get(fw, {}).get("warm_ms")

    for name in neighbours["workloads"]:
        if name not in TARGET_WORKLOADS:
            continue
        alone, first = warm("alone", name, "jitgrad[cpu]"), warm("numba+torch first", name, "jitgrad[cpu]")
        rows.append((name, "jitgrad numba+torch first / alone", first / alone if alone and first else None,
                     NEIGHBOUR_LIMIT))
        for condition in CONDITIONS:
            ours, numpy = warm(condition, name, "jitgrad[cpu]"), warm(condition, name, "numpy")
            rows.append((name, f"jitgrad / numpy, {condition}", ours / numpy if ours and numpy else None, NUMPY_LIMIT))
    return [(n, what, r, limit, r is not None and r <= limit) for n, what, r, limit in rows]


def markdown(neighbours):
    """The co-residence table and its check."""
    conditions = neighbours["conditions"]
    out = ["### Neighbours (SPEC 6.2)",
           "NumPy by hand and jitgrad[cpu] in one process: alone; after a parallel Numba function and a "
           "PyTorch op ran first; and alone while another process spins on one core. Warm ms (median).", "",
           "| workload | " + " | ".join(f"{c}: numpy | {c}: jitgrad" for c in conditions) + " |",
           "|---" * (1 + 2 * len(conditions)) + "|"]
    for name in neighbours["workloads"]:
        cells = []
        for condition in conditions:
            for fw in FRAMEWORKS:
                c = conditions[condition].get(name, {}).get(fw, {})
                cells.append(f"{c['warm_ms']:.3g}" if "warm_ms" in c else c.get("status", "n/a"))
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    rows = check(neighbours)
    out += ["", f"Check: every ratio within its limit ({'PASS' if all(r[-1] for r in rows) else 'FAIL'}).", "",
            "| workload | ratio | value | limit | |", "|---|---|---|---|---|"]
    out += [f"| {n} | {what} | {'n/a' if r is None else f'{r:.2f}'} | {limit} | {'ok' if ok else 'MISSED'} |"
            for n, what, r, limit, ok in rows]
    return out + [""]
