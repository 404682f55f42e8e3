"""Every ```python block of README.md and docs/**/*.md (but the contract, SPEC.md) runs as pasted:
each in a fresh namespace (blocks are standalone: imports and data included). A block fenced
```python no-run is skipped (it needs a GPU, or an API still to come). Blocks run on the
reference device unless they name one: their values are the same on every device, and the
compiled backends have suites of their own. A failing block's traceback points at its line in
the Markdown file.

The API pages also cover the package: every public name of jitgrad, jitgrad.nn, jitgrad.numpy and
jitgrad.scipy.* appears on its page, and every ``JITGRAD_`` variable the package reads appears in
docs/api/environment.md."""
import logging
import os
import re
import textwrap
from pathlib import Path

import pytest

import jitgrad as jg
import jitgrad.numpy as jnp
import jitgrad.scipy.linalg
import jitgrad.scipy.special
import jitgrad.scipy.signal
import jitgrad.scipy.stats

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
# a fence may be indented (inside a list item); its code is then dedented
FENCE = re.compile(r"^([ \t]*)```python( no-run)?[ \t]*\n(.*?)^\1```[ \t]*$", re.M | re.S)


def _blocks():
    # docs/SPEC.md is the contract, kept as written: its sketch uses names it does not define
    for path in [ROOT / "README.md", *sorted(p for p in DOCS.rglob("*.md") if p.name != "SPEC.md")]:
        text = path.read_text()
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start(3)) + 1  # the block's first line of code
            name = f"{path.relative_to(ROOT)}:{line}"
            yield pytest.param(path, line, textwrap.dedent(match.group(3)), id=name,
                               marks=[pytest.mark.skip(reason="no-run")] if match.group(2) else [])


@pytest.mark.parametrize("path, line, source", list(_blocks()))
def test_block_runs(path, line, source):
    saved = dict(os.environ), logging.getLogger("jitgrad").level  # what blocks may set: none outlives its block
    os.environ.update(JITGRAD_DEVICE="numpy", MPLBACKEND="Agg")
    where = f"{path.relative_to(ROOT)}:{line}"
    code = compile("\n" * (line - 1) + source, str(path), "exec")  # tracebacks name the file's own lines
    try:
        exec(code, {"__name__": "__docs__"})
    except Exception as e:
        raise AssertionError(f"the python block at {where} failed: {type(e).__name__}: {e}") from e
    finally:
        os.environ.clear()
        os.environ.update(saved[0])
        logging.getLogger("jitgrad").setLevel(saved[1])


def test_blocks_are_found():
    names = [p.id for p in _blocks()]
    assert any(n.startswith("README.md:") for n in names) and any(n.startswith("docs/tutorial.md:") for n in names)


def _public(module, exclude=()):
    return {n for n in dir(module) if not n.startswith("_") and n not in exclude
            and not type(getattr(module, n)).__name__ == "module"}


def _missing(names, page):
    text = (DOCS / "api" / page).read_text()
    return sorted(n for n in names if not re.search(rf"`[\w.]*\b{re.escape(n)}\b", text))


@pytest.mark.parametrize("module, page, exclude", [
    (jg, "jitgrad.md", {"JitgradError", "ShapeError", "TraceError", "GradError", "InputError", "JitgradWarning"}),
    (jg.errors, "errors.md", {"checks_on", "location", "user_frame", "user_code_frame", "contextlib", "os", "sys",
                              "threading"}),
    (jg.nn, "nn.md", {"jnp", "math", "np", "special"}),
    (jg.lax, "lax.md", ()),
    (jnp, "numpy.md", ()),
    (jitgrad.scipy.special, "scipy.md", ()),
    (jitgrad.scipy.linalg, "scipy.md", ()),
    (jitgrad.scipy.stats, "scipy.md", {"jnp", "linalg", "math", "np", "special", "types", "ShapeError",
                                       "user_frame"}),
    (jitgrad.scipy.signal, "scipy.md", {"jnp", "np", "ShapeError", "TraceError", "user_frame"}),
], ids=lambda v: getattr(v, "__name__", None) if not isinstance(v, (set, tuple)) else "")
def test_every_public_name_is_documented(module, page, exclude):
    assert _missing(_public(module, exclude), page) == []


def test_every_environment_variable_is_documented():
    read = set()
    for path in (ROOT / "jitgrad").rglob("*.py"):
        read |= set(re.findall(r"environ(?:\.get)?\(\s*\"(JITGRAD_\w+)\"", path.read_text()))
        read |= set(re.findall(r"environ\[\"(JITGRAD_\w+)\"\]", path.read_text()))
    assert len(read) > 10
    assert _missing(read, "environment.md") == []
