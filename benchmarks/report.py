"""Reporting: machine facts, derived ratios, markdown tables, the PNG chart, RESULTS.md."""
import datetime
import os
import platform

from . import neighbours
from .frameworks import GPU, PEERS

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


def _peers(results):
    return results["settings"].get("peers", PEERS)


def _on_gpu(results, fw):
    return results["frameworks"][fw].get("gpu", False)


def finish(results):
    """Add the best peer per workload and each cell's ratios to it and to the roofline floor
    (CPU frameworks: the STREAM floor; GPU frameworks: the fraction of the copy bandwidth reached)."""
    for name, cells in results["cells"].items():
        info = results["workloads"][name]
        peers = [(cells[p]["warm_ms"], p) for p in _peers(results) if cells.get(p, {}).get("status") == "ok"]
        info["best_peer"] = {"framework": min(peers)[1], "warm_ms": min(peers)[0]} if peers else None
        for fw, cell in cells.items():
            if cell.get("status") != "ok":
                continue
            if peers:
                cell["ratio_to_best_peer"] = cell["warm_ms"] / min(peers)[0]
            if _on_gpu(results, fw):
                if info.get("gpu_floor_ms"):
                    cell["copy_bw_fraction"] = info["gpu_floor_ms"] / cell["warm_ms"]
            elif info.get("roofline_floor_ms"):
                cell["ratio_to_floor"] = cell["warm_ms"] / info["roofline_floor_ms"]


def _ms(x):
    return f"{x:.3f}" if x < 1 else f"{x:.2f}" if x < 10 else f"{x:.1f}" if x < 100 else f"{x:.0f}"


def _table(results, header, cell_text, extra_rows=(), fws=None):
    fws = list(results["frameworks"]) if fws is None else fws
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


def _background_table(results):
    """jitgrad's first calls with JITGRAD_COMPILE=background beside sync and the peers' (SPEC 6.1)."""
    tiered = [fw for fw in results["frameworks"]
              if any("first_background_s" in cells.get(fw, {}) for cells in results["cells"].values())]
    if not tiered:
        return []
    peers = [fw for fw in ("jax", "autograd") if fw in results["frameworks"]]
    out = ["### First call with background compiles (s)",
           "Fresh process, empty disk cache. sync: compile, then run (the table above); background (the default): "
           "the first call runs on the interpreter while a worker process compiles, and a loop of calls switches "
           "to compiled code when it is in: 'compiled after' is the time from the first call's start to the end "
           "of the first compiled call, and how many calls ran on the interpreter before it.", "",
           "| workload | " + " | ".join(f"{fw} first" for fw in peers)
           + "".join(f" | {fw} sync first | {fw} background first | {fw} compiled after (calls)" for fw in tiered)
           + " |", "|---" * (1 + len(peers) + 3 * len(tiered)) + "|"]
    for name, cells in results["cells"].items():
        row = [_s(cells[fw]["first_cold_s"]) if "first_cold_s" in cells.get(fw, {}) else "–" for fw in peers]
        for fw in tiered:
            c = cells.get(fw, {})
            row += [_s(c["first_cold_s"]) if "first_cold_s" in c else "–",
                    _s(c["first_background_s"]) if "first_background_s" in c else "–",
                    f"{_s(c['compiled_s'])} ({c['interpreted_calls']})" if c.get("compiled_s") is not None else "–"]
        out.append(f"| {name} | " + " | ".join(row) + " |")
    return out + [""]


def _setup(results, fw):
    info = results["frameworks"][fw]
    if info["status"] == "missing":
        return "missing"
    return _s(info["setup_s"]) if info.get("setup_s") is not None else "–"


def _mem(c, name):
    s = f"{c['peak_warm_mb']:.0f}" if "peak_warm_mb" in c else "n/a"
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
    if s.get("gpu"):
        out += [gpu_line(results), ""]
    oe = results.get("openblas_env", {})
    if oe:
        was = {k: v for k, v in oe.get("original", {}).items() if v is not None}
        out += [f"OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE: originally {was or 'not set'}; "
                f"{'unset for this run' if oe.get('unset') else 'kept'}.", ""]
    out += ["### Warm time per call (ms, median)",
            f"In parentheses: time / the faster of {' and '.join(_peers(results))} on that workload "
            "(below 1.00x is faster)." + (" GPU columns synchronize the device before the clock stops." if s.get("gpu")
                                         else ""), "",
            _table(results, "workload", _warm), ""]
    out += ["### First call (s)", _first_note(s), "",
            _table(results, "workload", _first, [("import + setup (s)", lambda fw: _setup(results, fw))]), ""]
    out += _background_table(results)
    out += ["### Peak memory (MB)",
            "Extra resident memory during one warm call (VmHWM growth after resetting it via "
            "/proc/self/clear_refs; freed memory the allocator reuses is not counted)"
            + (" / ru_maxrss growth across the fresh-process first call (compile included)" if s["fresh"] else "")
            + "." + (" GPU columns: n/a, their arrays live in device memory (not measured)." if s.get("gpu") else ""),
            "", _table(results, "workload", _mem), ""]
    out += ["### Minor page faults per warm call", "ru_minflt delta over the timed calls / calls.", "",
            _table(results, "workload", lambda c, n: f"{c['minflt_per_call']:.0f}"), ""]
    mb = [n for n in results["cells"] if results["workloads"][n].get("roofline_floor_ms")]
    host = [fw for fw in results["frameworks"] if not _on_gpu(results, fw)]
    if mb and host:
        fws = host
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
    if s.get("gpu"):
        out += gpu_tables(results)
    if results.get("neighbours"):
        out += neighbours.markdown(results["neighbours"])
    problems = [(n, fw, c) for n, cells in results["cells"].items() for fw, c in cells.items()
                if c.get("status") not in ("ok", "missing")]
    firsts = [(n, fw, c[k]) for n, cells in results["cells"].items() for fw, c in cells.items()
              for k in ("first_cold_error", "first_warm_error", "first_background_error") if c.get(k)]
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


def gpu_line(results):
    """The card, its driver and its measured copy bandwidth, in one sentence."""
    g = results.get("gpu", {})
    if g.get("status") != "ok":
        return f"GPU: {g.get('status', 'not measured')} ({g.get('error', '')})."
    facts = [f"driver {g['driver']}" if g.get("driver") else "",
             f"{g['memory_GiB']} GiB" if g.get("memory_GiB") else "",
             f"{g['multiprocessors']} SMs" if g.get("multiprocessors") else ""]
    return (f"GPU: {g.get('smi_name') or g['name']}" + "".join(f", {f}" for f in facts if f) +
            f"; device-to-device copy {g['copy_GBps']:.0f} GB/s, bytes read + written ({g['method']}).")


def _pct(c):
    return f"{_ms(c['warm_ms'])} ({100 * c['copy_bw_fraction']:.0f}%)"


def gpu_tables(results):
    """The copy-bandwidth table of the GPU columns and the GPU targets of SPEC 5, as markdown lines."""
    g, cells, wls = results.get("gpu", {}), results["cells"], results["workloads"]
    gpu_fws = [fw for fw in results["frameworks"] if _on_gpu(results, fw)]
    out = []
    mb = [n for n in cells if wls[n].get("gpu_floor_ms")]
    if mb:
        out += ["### GPU copy bandwidth reached (memory-bound workloads)",
                f"Floor = least bytes moved (each input read once, each gradient written once) / the measured "
                f"device copy bandwidth {g['copy_GBps']:.0f} GB/s. Cells: warm ms (fraction of that bandwidth "
                "reached); SPEC target for jitgrad: at least 70%. Data that fits the L2 cache can exceed 100%.", "",
                "| workload | min MB | floor ms | " + " | ".join(gpu_fws) + " |", "|---" * (len(gpu_fws) + 3) + "|"]
        for n in mb:
            row = [_pct(c) if c.get("status") == "ok" and "copy_bw_fraction" in c else c.get("status", "?")
                   for c in (cells[n].get(fw, {}) for fw in gpu_fws)]
            out.append(f"| {n} | {wls[n]['min_bytes'] / 1e6:.0f} | {_ms(wls[n]['gpu_floor_ms'])} | "
                       + " | ".join(row) + " |")
        out.append("")
    jg, jax, cpu = f"jitgrad[{GPU}]", f"jax[{GPU}]", "jitgrad[cpu]"
    if jg not in results["frameworks"]:
        return out

    def get(n, fw):
        c = cells[n].get(fw, {})
        return c if c.get("status") == "ok" else None

    def ratio(a, b, fmt):
        return fmt(a["warm_ms"] / b["warm_ms"]) if a and b else "–"

    def shown(n, fw):  # the warm time, else the cell's status
        c = get(n, fw)
        return _ms(c["warm_ms"]) if c else cells[n].get(fw, {}).get("status", "?")
    variant = f"jitgrad[{GPU}:no-graphs]" if f"jitgrad[{GPU}:no-graphs]" in results["frameworks"] else None
    out += ["### GPU targets (SPEC 5) and jitgrad CPU versus GPU",
            f"vs JAX: {jg} time / {jax} time (target at most 1.00x). Bandwidth: fraction of the device copy bandwidth "
            f"(memory-bound workloads; target at least 70%). CPU/GPU: {cpu} time (host data) / {jg} time "
            "(device data), the speedup the GPU gives."
            + (f" {variant}: the same with every kernel launched on its own, no CUDA graphs (JITGRAD_CUDA_GRAPHS=0)."
               if variant else ""),
            "", f"| workload | {jg} ms | {jax} ms | vs JAX | bandwidth | {cpu} ms | CPU/GPU |"
            + (f" {variant} ms | vs JAX |" if variant else ""), "|---" * (9 if variant else 7) + "|"]
    for n in cells:
        j, x, c = get(n, jg), get(n, jax), get(n, cpu)
        bw = f"{100 * j['copy_bw_fraction']:.0f}%" if j and "copy_bw_fraction" in j else "–"
        row = (f"| {n} | {shown(n, jg)} | {shown(n, jax)} | {ratio(j, x, lambda r: f'{r:.2f}x')} | {bw} | "
               f"{shown(n, cpu)} | {ratio(c, j, lambda r: f'{r:.1f}x')} |")
        if variant:
            row += f" {shown(n, variant)} | {ratio(get(n, variant), x, lambda r: f'{r:.2f}x')} |"
        out.append(row)
    return out + [""]


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
    ax.set_ylabel("speed / fastest of " + ", ".join(_peers(results)))
    ax.set_title("Warm speed relative to the fastest peer (higher is better)" +
                 (f" — {_gpu_name(results)}" if results["settings"].get("gpu") else "") +
                 (" — SMALL sizes" if results["settings"]["small"] else ""))
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _pool(p):
    return (f"{p.get('internal_api')} {p.get('version') or ''}".strip() + f" ({p.get('prefix')}, "
            f"{p.get('num_threads')} threads" + (f", {p['architecture']}" if p.get("architecture") else "") + ")")


def _gpu_name(results):
    g = results.get("gpu", {})
    return g.get("smi_name") or g.get("name") or "no GPU"


GPU_BEGIN = "<!-- GPU section: written by `python -m benchmarks --device cuda --write-results`; CPU runs keep it -->"
GPU_END = "<!-- end of GPU section -->"


def update_results_page(old, results, chart=None):
    """RESULTS.md after a run: a CPU run rewrites the page and keeps the GPU section of ``old``;
    a GPU run replaces (or appends) only that section. ``chart``: the PNG's file name, if any."""
    begin, end = old.find(GPU_BEGIN), old.find(GPU_END)
    kept = old[begin:end + len(GPU_END)] if 0 <= begin < end else ""
    if not results["settings"].get("gpu"):
        return results_page(results, chart) + ("\n" + kept + "\n" if kept else "")
    section = gpu_section(results, chart)
    if kept:
        return old.replace(kept, section)
    return old.rstrip("\n") + "\n\n" + section + "\n"


def gpu_section(results, chart=None):
    """The GPU section of RESULTS.md: card, driver, date, versions, the GPU run's tables."""
    m, s, fws = results["meta"], results["settings"], results["frameworks"]
    versions = {k: v for info in fws.values() for k, v in info.get("versions", {}).items()}
    cmd = "python -m benchmarks --device cuda" + " --quick" * s["quick"] + " --write-results"
    lines = [GPU_BEGIN, "## GPU", "", f"Produced by `{cmd}` on a machine with one GPU; every number in this "
             "section comes from that one run.", ""]
    if s["quick"]:
        lines += ["**Quick mode**: few timed calls per cell, no fresh-process first calls, a time budget; cells "
                  "past it are `skipped`. Indicative only.", ""]
    lines += [f"- {gpu_line(results)}", f"- Host: {m['cpu']}, {m['logical_cpus']} logical CPUs, Python {m['python']}",
              f"- Date: {m['date']}", "- Versions: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))]
    lines += [f"- {fw}: missing ({i['reason']})" for fw, i in fws.items() if i["status"] == "missing"]
    figure = [f"![GPU warm speed relative to the fastest of JAX and torch.compile on the GPU]({chart})", ""] \
        if chart else []
    return "\n".join(lines + [""] + figure + [markdown(results), GPU_END])


def results_page(results, chart=None):
    """benchmarks/RESULTS.md: machine, date, versions, thread pools, bandwidth, tables."""
    m, s, fws = results["meta"], results["settings"], results["frameworks"]
    versions = {k: v for info in fws.values() for k, v in info.get("versions", {}).items()}
    cmd = "python -m benchmarks" + " --quick" * s["quick"] + " --small" * s["small"] \
        + " --neighbours" * bool(results.get("neighbours")) + " --write-results"
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
    figure = [f"![warm speed relative to the fastest of JAX and torch.compile]({chart})", ""] if chart else []
    return "\n".join(lines + ["", "## Results", ""] + figure + [markdown(results)]) + "\n"
