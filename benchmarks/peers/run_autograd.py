"""Run HIPS autograd's own test suite, or its example programs, on jitgrad through
``autograd_adapter`` (nothing is fetched: pass the path of a checkout of autograd).

    python benchmarks/peers/run_autograd.py AUTOGRAD/tests [--device cpu] [-k EXPR] [--failures]
    python benchmarks/peers/run_autograd.py --examples PORTED_DIR

Tests: prints passes per file, the total, and with ``--failures`` each failure's error type and
first line, grouped by the error's kind. Examples: runs each ``*.py`` in ``PORTED_DIR`` (examples
whose imports were changed to ``numpy``/``jitgrad``) in a fresh process with a time limit.
"""
import argparse
import collections
import os
import pathlib
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent


class _Collector:
    """A pytest plugin: installs the adapter, then records each test's outcome."""

    def __init__(self, device):
        self.device, self.outcomes = device, {}

    def pytest_configure(self, config):
        sys.path.insert(0, str(HERE))
        import autograd_adapter
        autograd_adapter.install(self.device)

    def pytest_runtest_logreport(self, report):
        if report.when == "call" or report.outcome != "passed":
            error = ""
            if report.failed and report.longrepr is not None:
                crash = getattr(report.longrepr, "reprcrash", None)
                error = (crash.message if crash else str(report.longrepr)).splitlines()[0][:160]
            if report.nodeid not in self.outcomes or report.outcome != "passed":
                self.outcomes[report.nodeid] = (report.outcome, error)


def run_tests(path, device, keyword, failures):
    import pytest
    collector = _Collector(device)
    args = [str(path), "-q", "-p", "no:cacheprovider", "-p", "no:randomly", "--no-header", "-rN", "--tb=line",
            "-W", "ignore"]
    if keyword:
        args += ["-k", keyword]
    start = time.time()
    pytest.main(args, plugins=[collector])
    per_file = collections.defaultdict(lambda: [0, 0])
    kinds = collections.Counter()
    for nodeid, (outcome, error) in sorted(collector.outcomes.items()):
        counts = per_file[nodeid.split("::")[0].rsplit("/", 1)[-1]]
        counts[1] += 1
        counts[0] += outcome == "passed"
        if outcome != "passed":
            kinds[error.split(":")[0]] += 1
    print(f"\n{'file':28} passed/total   (device {device})")
    for name, (ok, total) in sorted(per_file.items()):
        print(f"{name:28} {ok:4d}/{total}")
    ok = sum(c[0] for c in per_file.values())
    total = sum(c[1] for c in per_file.values())
    print(f"{'TOTAL':28} {ok:4d}/{total}   ({time.time() - start:.0f} s)")
    if failures:
        print("\nfailures by kind:", dict(kinds.most_common()))
        for nodeid, (outcome, error) in sorted(collector.outcomes.items()):
            if outcome != "passed":
                print(f"  {nodeid}: {error}")


def run_examples(folder, timeout):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE.parents[1]), os.environ.get("PYTHONPATH", "")]),
               MPLBACKEND="Agg")
    ok = 0
    files = sorted(pathlib.Path(folder).glob("*.py"))
    for path in files:
        start = time.time()
        try:
            done = subprocess.run([sys.executable, path.name], cwd=path.parent, env=env, capture_output=True,
                                  text=True, timeout=timeout)
            status = "ok" if done.returncode == 0 else (done.stderr.strip().splitlines() or ["failed"])[-1][:150]
        except subprocess.TimeoutExpired:
            status = f"ran past {timeout} s"
        ok += status == "ok"
        print(f"{path.name:36} {time.time() - start:6.1f} s  {status}")
    print(f"examples: {ok}/{len(files)} ran")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", help="autograd's tests/ folder, or with --examples the ported examples' folder")
    parser.add_argument("--device", default="numpy")
    parser.add_argument("-k", dest="keyword", help="pytest -k expression (a sample)")
    parser.add_argument("--failures", action="store_true", help="list every failure")
    parser.add_argument("--examples", action="store_true")
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    if args.examples:
        run_examples(args.path, args.timeout)
    else:
        run_tests(args.path, args.device, args.keyword, args.failures)


if __name__ == "__main__":
    main()
