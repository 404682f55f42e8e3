"""The IR: a typed SSA graph. A ``Node`` is one value (an op applied to argument nodes with
static params, a static shape and a dtype); a ``Program`` is inputs plus outputs, and its
body is every node the outputs reach, in topological order. Nodes are immutable and shared
between programs, so transforms build new nodes instead of editing old ones."""
import functools
import hashlib
import math
import operator

import numpy as np

_SHORT = {"float64": "f64", "float32": "f32", "float16": "f16", "int64": "i64", "int32": "i32",
          "int16": "i16", "int8": "i8", "uint64": "u64", "uint32": "u32", "uint16": "u16",
          "uint8": "u8", "bool": "bool"}


TUPLE = np.dtype(object)  # the dtype of a node that is several values (``Node.is_tuple``)


@functools.lru_cache(maxsize=1 << 12)  # (a program's text prints a type per node: its hash reads it)
def type_str(shape, dtype):
    name = np.dtype(dtype).name
    return f"{_SHORT.get(name, name)}[{','.join(map(str, shape))}]"


class Node:
    """One SSA value. Build nodes with ``jitgrad.ir.ops.make``, which checks shapes and dtypes."""
    __slots__ = ("op", "args", "params", "shape", "dtype", "weak", "where")

    def __init__(self, op, args, params, shape, dtype, weak=False, where=None):
        self.op, self.args, self.params = op, tuple(args), params
        # exact ints: a shape reaches generated code, and a user's int subclass must not (its repr)
        self.shape, self.dtype, self.weak, self.where = tuple(map(operator.index, shape)), np.dtype(dtype), weak, where

    @property
    def ndim(self):
        return len(self.shape)

    @property
    def size(self):
        return math.prod(self.shape)

    @property
    def type(self):
        if self.is_tuple:
            return "(" + ", ".join(type_str(s, d) for s, d in self.params["types"]) + ")"
        return type_str(self.shape, self.dtype)

    @property
    def is_tuple(self):
        """Whether the node is several values (a loop's carries and outputs), which ``element``
        nodes take apart; it has no array of its own."""
        return self.dtype == TUPLE

    def key(self):
        """Structural identity (op, argument identities, params): equal keys compute equal values."""
        return (self.op, tuple(id(a) for a in self.args), params_key(self.params), self.shape, self.dtype.str)

    def __repr__(self):
        return f"Node({self.op}, {self.type})"


def params_key(params):
    return tuple((k, _param_key(v)) for k, v in sorted(params.items()))


def _param_key(v):
    if isinstance(v, Program):
        return ("program", v.content_hash())
    if isinstance(v, tuple) and v and isinstance(v[0], Program):
        return tuple(map(_param_key, v))
    if isinstance(v, np.ndarray):
        return ("array", v.dtype.str, v.shape, hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest())
    if isinstance(v, np.dtype):
        return v.str
    return v


def _param_str(v):
    if isinstance(v, np.ndarray):
        if v.size <= 8:
            return np.array2string(v, separator=",", threshold=8).replace("\n", "")
        return f"<{type_str(v.shape, v.dtype)} {_param_key(v)[3][:12]}>"
    if isinstance(v, np.dtype):
        return _SHORT.get(v.name, v.name)
    return str(v)


def toposort(outputs, is_leaf=None):
    """Every node the outputs reach, arguments before users (not looking past nodes for which
    ``is_leaf`` is true). Iterative: deep graphs must not hit Python's recursion limit."""
    order, seen = [], set()
    for root in outputs:
        stack = [(root, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                order.append(node)
                continue
            if id(node) in seen:
                continue
            seen.add(id(node))
            stack.append((node, True))
            if is_leaf is None or not is_leaf(node):
                stack.extend((a, False) for a in reversed(node.args) if id(a) not in seen)
    return order


def substitute(outputs, replace):
    """``outputs`` with the nodes ``replace`` maps (by id) replaced, every node that reads a
    replaced one rebuilt on the new operands, and the others shared unchanged."""
    memo = dict(replace)
    for n in toposort(outputs, lambda n: id(n) in replace):
        if id(n) not in memo:
            args = [memo.get(id(a), a) for a in n.args]
            memo[id(n)] = n if all(a is b for a, b in zip(args, n.args)) else \
                Node(n.op, args, n.params, n.shape, n.dtype, n.weak, n.where)
    return [memo[id(o)] for o in outputs]


class Effect:
    """What the host does with some of a program's values after a call, in program order: an
    effect ``kind`` (``debug_print``, whose host side ``tracing.HOST_EFFECTS`` holds) with its
    format string ``fmt`` and the pytree ``treedef`` of its ``count`` values, which the program
    returns as its last outputs (after its results and the operands of earlier effects).
    Backends thus need nothing for effects: their operands are outputs, which simplification
    keeps and every executable hands back."""
    __slots__ = ("kind", "fmt", "treedef", "count", "where")

    def __init__(self, kind, fmt, treedef, count, where=None):
        self.kind, self.fmt, self.treedef, self.count, self.where = kind, fmt, treedef, count, where


class Program:
    """A traced function: ``inputs`` (nodes with op ``input``) to ``outputs``; the last outputs
    are the operands of its ``effects``, the others its ``results``."""

    def __init__(self, inputs, outputs, name="f", effects=()):
        self.inputs, self.outputs, self.name = list(inputs), list(outputs), name
        self.effects = tuple(effects)
        self._nodes = self._hash = None

    @property
    def results(self):
        """The outputs the function returns (without the effects' operands)."""
        return self.outputs[:len(self.outputs) - sum(e.count for e in self.effects)]

    @property
    def nodes(self):
        """The body in topological order (inputs first, even unused ones)."""
        if self._nodes is None:
            body = toposort(self.outputs)
            inputs = set(map(id, self.inputs))
            self._nodes = list(self.inputs) + [n for n in body if id(n) not in inputs]
        return self._nodes

    def count(self, include_constants=False):
        """Number of primitive ops in the body (the size a person would count)."""
        skip = {"input"} if include_constants else {"input", "const"}
        return sum(n.op not in skip for n in self.nodes)

    def text(self, locations=True, indent=""):
        """One SSA line per op; a loop's body program follows its line, indented (as JAX prints
        a scan's jaxpr)."""
        names = {id(n): f"%{i}" for i, n in enumerate(self.nodes)}
        head = ", ".join(f"{names[id(n)]}: {n.type}" for n in self.inputs)
        lines = [f"{indent}def {self.name}({head}):"]
        for n in self.nodes:
            if n.op == "input":
                continue
            args = " ".join(names[id(a)] for a in n.args)
            params = " ".join(f"{k}={_param_str(v)}" for k, v in sorted(n.params.items())
                              if k not in _BODY_PARAMS + ("types",))
            line = f"{indent}  {names[id(n)]}: {n.type} = {n.op} {args} {params}".rstrip()
            if locations and n.where:
                line = f"{line:<60}  # {n.where}"
            lines.append(line)
            lines += [body.text(locations, indent + "      ") for body in body_programs(n)]
        operands = iter(self.outputs[len(self.results):])
        for e in self.effects:
            args = [names[id(next(operands))] for _ in range(e.count)]
            line = f"{indent}  " + " ".join([e.kind, *args, f"fmt={e.fmt!r}"])
            if locations and e.where:
                line = f"{line:<60}  # {e.where}"
            lines.append(line)
        lines.append(f"{indent}  return " + ", ".join(names[id(n)] for n in self.results))
        return "\n".join(lines)

    def __str__(self):
        return self.text()

    __repr__ = __str__

    def __getstate__(self):
        """Pickled flat, one row per node with its arguments' positions: a deep graph would
        exceed the recursion limit as nested nodes (a compile worker receives programs)."""
        position = {id(n): i for i, n in enumerate(self.nodes)}
        rows = [(n.op, [position[id(a)] for a in n.args], n.params, n.shape, n.dtype.str, n.weak, n.where)
                for n in self.nodes]
        return {"name": self.name, "rows": rows, "inputs": [position[id(n)] for n in self.inputs],
                "outputs": [position[id(n)] for n in self.outputs],
                "effects": [(e.kind, e.fmt, e.treedef, e.count, e.where) for e in self.effects]}

    def __setstate__(self, state):
        nodes = []
        for op, args, params, shape, dtype, weak, where in state["rows"]:
            nodes.append(Node(op, [nodes[i] for i in args], params, shape, dtype, weak, where))
        self.__init__([nodes[i] for i in state["inputs"]], [nodes[i] for i in state["outputs"]], state["name"],
                      [Effect(*e) for e in state["effects"]])

    def verify(self, after="a pass"):
        """``ops.verify(self)``: every node agrees with its op's shape/dtype rule (raises
        ``IRError``); returns the program."""
        from . import ops  # ops builds Nodes, so it imports this module: look it up when called
        return ops.verify(self, after)

    def content_hash(self):
        """Stable across processes: depends on the computation only (not on source lines)."""
        if self._hash is None:  # (programs are not edited once built)
            self._hash = hashlib.sha256(self.text(locations=False).encode()).hexdigest()
        return self._hash


# Params that hold programs (a loop's body, a conditional's branches): printed under the node.
_BODY_PARAMS = ("cond_body", "body", "branches")


def body_programs(node):
    """The programs a control-flow node holds (its condition and body, or its branches)."""
    found = []
    for k in _BODY_PARAMS:
        value = node.params.get(k)
        found += [value] if isinstance(value, Program) else list(value or ())
    return found
