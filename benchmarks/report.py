"""Reporting: machine facts, derived ratios, markdown tables, the PNG chart, RESULTS.md."""
import datetime
import os
import platform

from .frameworks import PEERS

STATUS_NOTE = {"missing": "package or jitgrad device not available", "error": "raised (see Errors)",
               "wrong": "value or gradients disagree with the hand-written NumPy ones (not timed)",
               "timeout": "worker ran out of time in this cell", "skipped": "time budget spent before this cell"}


def machine():
    """CPU model, cores, memory, OS, Python, date."""
    cpu, cores_per_socket = platform.processor() or "unknown", None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, val = line.partition(":")
                if key.strip() == "model name":
                    cpu = val.strip()
                elif key.strip() == "cpu cores" and cores_per_socket is None:
                    cores_per_socket = int(val)
    except OSError:
        pass
    mem_gb = None
    try:
        mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    except (ValueError, OSError, AttributeError):
        pass
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)),
            "cores_per_socket": cores_per_socket, "memory_GiB": round(mem_gb, 1) if mem_gb else None,
            "os": platform.platform(), "python": platform.python_version(),
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}


def finish(results):
    """Add the best peer per workload and each cell's ratios to it and to the roofline floor."""
    for name, cells in results["cells"].items():
        info = results["workloads"][name]
        peers = [(cells[p]["warm_ms"], p) for p in PEERS if cells.get(p, {}).get("status") == "ok"]
        info["best_peer"] = {"framework": min(peers)[1], "warm_ms": min(peers)[0]} if peers else None
        for cell in cells.values():
            if cell.get("status") != "ok":
                continue
            if peers:
                cell["ratio_to_best_peer"] = cell["warm_ms"] / min(peers)[0]
            if info.get("roofline_floor_ms"):
                cell["ratio_to_floor"] = cell["warm_ms"] / info["roofline_floor_ms"]


def _ms(x):
    return f"{x:.3f}" if x < 1 else f"{x:.2f}" if x < 10 else f"{x:.1f}" if x < 100 else f"{x:.0f}"


def _table(results, header, cell_text, extra_rows=()):
    fws = list(results["frameworks"])
    lines = [f"| {header} | " + " | ".join(fws) + " |", "|---" * (len(fws) + 1) + "|"]
    for name, cells in results["cells"].items():
        label = name + (" *(variant)*" if results["workloads"][name]["extra"] else "")
        row = []
        for fw in fws:
            c = cells.get(fw, {"status": "skipped"})
            row.append(cell_text(c, name) if c.get("status") == "ok" else c.get("status", "?"))
        lines.append(f"| {label} | " + " | ".join(row) + " |")
    for label, fn in extra_rows:
        lines.append(f"| {label} | " + " | ".join(fn(fw) for fw in fws) + " |")
    return "\n".join(lines)


def _warm(c, name):
    r = c.get("ratio_to_best_peer")
    return f"{_ms(c['warm_ms'])}" + (f" ({r:.2f}x)" if r is not None else "")


def _s(x):
    return f"{x:.3f}" if x < 1 else f"{x:.2f}"


def _first(c, name):
    if "first_cold_s" in c:
        warm = c.get("first_warm_s")
        mark = "" if c.get("disk_cache") else "\\*"
        return f"{_s(c['first_cold_s'])} / " + (f"{_s(warm)}{mark}" if warm is not None else "–")
    return f"{_s(c['first_call_inprocess_s'])} (in-proc)"


def _first_note(s):
    note = ("Fresh process, trace + compile with an empty disk cache / a second fresh process after the first "
            "populated the cache (\\* no disk cache: the plain first call again). ")
    note += ("\"in-proc\": no fresh-process run; the warm worker's first call, after the framework was imported "
             "and earlier workloads compiled")
    note += (", with compile caches kept from earlier runs (--persistent-cache), so possibly not cold. "
             if s.get("persistent_cache") else ", with an empty disk cache. ")
    return note + "Last row: the warm worker's framework import + setup."


def _setup(results, fw):
    info = results["frameworks"][fw]
    if info["status"] == "missing":
        return "missing"
    return _s(info["setup_s"]) if info.get("setup_s") is not None else "–"


def _mem(c, name):
    s = f"{c['peak_warm_mb']:.0f}" if "peak_warm_mb" in c else "?"
    return s + (f" / {c['peak_first_mb']:.0f}" if "peak_first_mb" in c else "")


def markdown(results):
    """All tables as markdown."""
    s, st, m = results["settings"], results["stream"], results["meta"]
    mode = ("quick" if s["quick"] else "full") + " mode"
    if s["small"]:
        mode += ", SMALL sizes (not SPEC 5's: a smoke test, numbers meaningless)"
    blas = ", ".join(f"{p.get('internal_api')} {p.get('version')} ({p.get('num_threads')} threads"
                     + (f", {p['architecture']}" if p.get("architecture") else "") + ")" for p in results["blas"]
                     if p.get("user_api") == "blas") or "unknown"
    out = [f"Run: {m['date']}, {m['cpu']}, {m['logical_cpus']} CPUs, {mode}, {s['repeats']}+ timed calls per "
           f"cell, wall {m.get('wall_s', 0):.0f} s. NumPy BLAS: {blas}. STREAM triad {st['triad_GBps']:.1f} GB/s "
           f"({st['method']}).", ""]
    oe = results.get("openblas_env", {})
    if oe:
        was = {k: v for k, v in oe.get("original", {}).items() if v is not None}
        out += [f"OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE: originally {was or 'not set'}; "
                f"{'unset for this run' if oe.get('unset') else 'kept'}.", ""]
    out += ["### Warm time per call (ms, median)",
            "In parentheses: time / the faster of JAX and torch.compile on that workload (below 1.00x is faster).", "",
            _table(results, "workload", _warm), ""]
    out += ["### First call (s)", _first_note(s), "",
            _table(results, "workload", _first, [("import + setup (s)", lambda fw: _setup(results, fw))]), ""]
    out += ["### Peak memory (MB)",
            "Extra resident memory during one warm call (VmHWM growth after resetting it via "
            "/proc/self/clear_refs; freed memory the allocator reuses is not counted)"
            + (" / ru_maxrss growth across the fresh-process first call (compile included)" if s["fresh"] else "")
            + ".", "", _table(results, "workload", _mem), ""]
    out += ["### Minor page faults per warm call", "ru_minflt delta over the timed calls / calls.", "",
            _table(results, "workload", lambda c, n: f"{c['minflt_per_call']:.0f}"), ""]
    mb = [n for n in results["cells"] if results["workloads"][n].get("roofline_floor_ms")]
    if mb:
        fws = list(results["frameworks"])
        out += ["### Roofline (memory-bound workloads)",
                f"Floor = least bytes moved (each input read once, each gradient written once) / STREAM triad "
                f"{st['triad_GBps']:.1f} GB/s. Cells: warm ms (x floor); SPEC target for jitgrad: within 1.3x.", "",
                "| workload | min MB | floor ms | " + " | ".join(fws) + " |", "|---" * (len(fws) + 3) + "|"]
        for n in mb:
            w = results["workloads"][n]
            row = [f"{_ms(c['warm_ms'])} ({c['ratio_to_floor']:.2f}x)" if c.get("status") == "ok" else
                   c.get("status", "?") for c in (results["cells"][n].get(fw, {}) for fw in fws)]
            out.append(f"| {n} | {w['min_bytes'] / 1e6:.0f} | {_ms(w['roofline_floor_ms'])} | "
                       + " | ".join(row) + " |")
        out.append("")
    problems = [(n, fw, c) for n, cells in results["cells"].items() for fw, c in cells.items()
                if c.get("status") not in ("ok", "missing")]
    firsts = [(n, fw, c[k]) for n, cells in results["cells"].items() for fw, c in cells.items()
              for k in ("first_cold_error", "first_warm_error") if c.get(k)]
    missing = [(fw, i["reason"]) for fw, i in results["frameworks"].items() if i["status"] == "missing"]
    if problems or firsts or missing:
        out += ["### Errors, wrong results, missing frameworks", ""]
        out += [f"- {fw}: missing ({why})" for fw, why in missing]
        for n, fw, c in problems:
            detail = c.get("error") or (f"errors {c['check']}" if "check" in c else "")
            out.append(f"- {n} / {fw}: {c['status']} ({STATUS_NOTE.get(c['status'], '')}) {detail}".rstrip())
        out += [f"- {n} / {fw}: fresh-process first call failed: {e}" for n, fw, e in firsts]
        out.append("")
    views = [(n, fw, c["views"]) for n, cells in results["cells"].items() for fw, c in cells.items() if c.get("views")]
    if views:
        out += ["### Gradients returned as views", "These gradients alias an input or are broadcasts (a zero "
                "stride), so they were never written: fewer bytes than the roofline floor assumes.", ""]
        out += [f"- {n} / {fw}: " + ", ".join(results["workloads"][n]["argnames"][i] for i in v) for n, fw, v in views]
        out.append("")
    return "\n".join(out)


def chart(results, path):
    """Grouped bars: speed relative to the faster peer (best peer time / time), log scale. Path or None."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    names = [n for n in results["cells"] if results["workloads"][n].get("best_peer")]
    fws = [fw for fw in results["frameworks"] if any(results["cells"][n].get(fw, {}).get("status") == "ok"
                                                     for n in names)]
    if not names or not fws:
        return None
    fig, ax = plt.subplots(figsize=(max(9, 1.7 * len(names) + 2), 4.8))
    width = 0.8 / len(fws)
    for i, fw in enumerate(fws):
        xs, ys = [], []
        for j, n in enumerate(names):
            c = results["cells"][n].get(fw, {})
            if c.get("status") == "ok":
                xs.append(j + (i - (len(fws) - 1) / 2) * width)
                ys.append(1 / c["ratio_to_best_peer"])
        ax.bar(xs, ys, width, label=fw)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_yscale("log")
    ax.set_xticks(range(len(names)), names, rotation=15)
    ax.set_ylabel("speed / fastest of JAX, torch.compile")
    ax.set_title("Warm speed relative to the fastest peer (higher is better)" +
                 (" — SMALL sizes" if results["settings"]["small"] else ""))
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _pool(p):
    return (f"{p.get('internal_api')} {p.get('version') or ''}".strip() + f" ({p.get('prefix')}, "
            f"{p.get('num_threads')} threads" + (f", {p['architecture']}" if p.get("architecture") else "") + ")")


def results_page(results, chart=False):
    """benchmarks/RESULTS.md: machine, date, versions, thread pools, bandwidth, tables."""
    m, s, fws = results["meta"], results["settings"], results["frameworks"]
    versions = {k: v for info in fws.values() for k, v in info.get("versions", {}).items()}
    cmd = "python -m benchmarks" + " --quick" * s["quick"] + " --small" * s["small"] + " --write-results"
    lines = ["# jitgrad benchmark results", "",
             f"Produced by `{cmd}` (see `benchmarks/README.md`); every number comes from one run on one machine.", ""]
    if s["quick"]:
        lines += ["**Quick mode**: 3 timed calls per cell, no fresh-process first calls, a time budget, compile "
                  "caches kept between runs. Indicative only; publish a full run.", ""]
    stream = ", ".join(f"{k} {v:.1f}" for k, v in results["stream"]["GBps"].items())
    lines += ["## Machine", "",
              f"- CPU: {m['cpu']}, {m['logical_cpus']} logical CPUs ({m['cpus_usable']} usable"
              + (f", {m['cores_per_socket']} cores per socket" if m.get("cores_per_socket") else "") + ")",
              f"- Memory: {m['memory_GiB']} GiB", f"- OS: {m['os']}", f"- Python {m['python']}",
              f"- Date: {m['date']}", f"- STREAM: {stream} GB/s ({results['stream']['method']})", "",
              "## Versions", ""]
    lines += [f"- {k} {v}" for k, v in sorted(versions.items())]
    lines += [f"- {fw}: missing ({i['reason']})" for fw, i in fws.items() if i["status"] == "missing"]
    lines += ["", "## Thread pools (threadpoolctl)", "", "- runner (NumPy): " + "; ".join(map(_pool, results["blas"]))]
    lines += [f"- {fw}: " + "; ".join(map(_pool, i["threadpools"])) for fw, i in fws.items() if i.get("threadpools")]
    figure = ["![warm speed relative to the fastest of JAX and torch.compile](speed.png)", ""] if chart else []
    return "\n".join(lines + ["", "## Results", ""] + figure + [markdown(results)]) + "\n"
