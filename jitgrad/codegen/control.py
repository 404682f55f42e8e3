"""Programs with control flow (``ops.CONTROL``) on any backend: the host runs the loops and
conditionals, and everything between them, and every body, is a loop-free program the backend
compiles as usual. A backend whose executable has ``scan`` runs a scan's whole loop itself (the
CPU, in compiled code: ``numba_cpu/steps.py``).

A program is cut into stages: stage ``k`` is a *piece* (the loop-free ops whose operands are
ready once the control-flow ops of stages before ``k`` have run) followed by the control-flow
ops that can run then. A body is compiled once, whatever the trip count, and called by the
host once per iteration on the carries and the iteration's slices of the scanned arrays.
"""
import numpy as np

from ..ir import ops
from ..ir.evaluate import branch_index
from ..ir.graph import Node, Program, body_programs, substitute
from ..runtime import arrays


def has_control(program):
    return any(n.op in ops.CONTROL for n in program.nodes)


class Staged:
    """``program`` as stages of compiled pieces and host-run control flow; ``compile(program)``
    gives the backend's executable of a piece or body (itself ``Staged`` when it has loops).
    With ``to_device``, values live on the GPU between the steps and results come back as the
    backend's do: on the device when an input was there."""

    def __init__(self, program, compile, to_device=None):
        self.program, self._compile, self._to_device = program, compile, to_device
        self._steps = _stages(program)  # pieces (_Piece) and control-flow nodes, in order
        self._bodies = {}  # id(body program) -> (it, its executable): each compiled once
        self._while_steps = {}  # id(while node) -> the executable of while_step(it), where it loops compiled
        for step in self._steps:
            if isinstance(step, _Piece):
                step.executable = compile(step.program)
                continue
            for body in body_programs(step):
                if id(body) not in self._bodies:
                    self._bodies[id(body)] = (body, Staged(body, compile, to_device) if has_control(body)
                                              else compile(_compiled_body(step, body)))
            if step.op == "while" and hasattr(self.body(step.params["body"]), "while_loop") and \
                    not any(map(has_control, body_programs(step))):
                self._while_steps[id(step)] = compile(while_step(step))
        self.peak_bytes = None

    def body(self, program):
        """The executable of a loop's body or a branch."""
        return self._bodies[id(program)][1]

    def executables(self):
        return [s.executable for s in self._steps if isinstance(s, _Piece)] + \
            [e for _, e in self._bodies.values()] + list(self._while_steps.values())

    def mark_complete(self):
        """(After a background compile: each executable records itself complete in the disk cache.)"""
        for e in self.executables():
            getattr(e, "mark_complete", lambda: None)()

    @property
    def kernels(self):
        groups = []
        for step in self._steps:
            if isinstance(step, _Piece):
                groups += [[step.origin[id(n)] for n in group if id(n) in step.origin]
                           for group in step.executable.kernels]
            else:
                groups.append([step])
        return [g for g in groups if g]

    @property
    def source(self):
        parts = []
        for step in self._steps:
            if isinstance(step, _Piece):
                parts.append(f"# piece {step.program.name}\n{step.executable.source}")
            else:
                bodies = body_programs(step)
                runs = "run by the host over the compiled"
                if self._compiled_loop(step):
                    runs = "a compiled loop (no Python per iteration) over"
                parts.append(f"# {step.op}, {runs} {', '.join(b.name for b in bodies)}:\n"
                             + "\n".join(f"# {b.name}\n{self.body(b).source}" for b in bodies))
        return "\n\n".join(parts)

    def _compiled_loop(self, node):
        """Whether loop ``node`` runs in compiled code (a scan's body, or a while's step, that the
        backend can loop over: ``runs_loop``)."""
        p = node.params
        if node.op == "scan":
            executable, counts = self.body(p["body"]), (p["num_consts"], p["num_carry"])
        elif node.op == "while" and id(node) in self._while_steps:
            executable = self._while_steps[id(node)]
            counts = (p["num_cond_consts"] + p["num_body_consts"], len(p["types"]))
        else:
            return False
        return getattr(executable, "runs_loop", lambda *_: False)(*counts)

    @property
    def compiling(self):
        return any(getattr(e, "compiling", False) for e in self.executables())

    def __call__(self, *args):
        on_device = self._to_device is not None and any(arrays.on_gpu(a) for a in args)
        if self._to_device is not None:
            args = [self._to_device(a) for a in args]
        env = {id(n): a for n, a in zip(self.program.inputs, args)}
        for step in self._steps:
            if isinstance(step, _Piece):
                env.update(zip(map(id, step.outputs), step.executable(*[_value(env, n) for n in step.inputs])))
            else:
                values = RUN[step.op](self, step, [_value(env, a) for a in step.args])
                env[id(step)] = values
        results = []
        for o in self.program.outputs:
            value = _value(env, o)
            if o.op in ops.LEAVES or o.op == "element" or any(value is r for r in results):
                value = _copy(value)  # results are arrays of their own
            results.append(value)
        if self._to_device is not None and not on_device:
            results = [arrays.to_host(r).reshape(o.shape) for r, o in zip(results, self.program.outputs)]
        return results


def _stages(program):
    """The program's pieces (``_Piece``) and control-flow nodes, in the order they run."""
    steps, level = [], _levels(program)
    for k in range(max(level.values(), default=0) + 1):
        nodes = [n for n in program.nodes if level[id(n)] == k and n.op not in ops.CONTROL + ops.TUPLES
                 and n.op not in ops.LEAVES]
        if nodes:
            steps.append(_Piece(program, nodes, f"{program.name}_{len(steps)}"))
        steps += [n for n in program.nodes if level[id(n)] == k and n.op in ops.CONTROL]
    return steps


def loop_free_programs(program):
    """Every loop-free program a ``Staged`` of ``program`` compiles: its pieces and, recursively,
    its loops' bodies (what a background compile builds in one job)."""
    found, seen = [], set()
    for step in _stages(program):
        if isinstance(step, _Piece):
            found.append(step.program)
            continue
        for body in body_programs(step):
            if id(body) not in seen:
                seen.add(id(body))
                found += loop_free_programs(body) if has_control(body) else [_compiled_body(step, body)]
        if step.op == "while" and not any(map(has_control, body_programs(step))):
            found.append(while_step(step))  # (a background compile is the CPU's: it loops compiled)
    return found


def while_step(node):
    """A while loop's step as one program, for a backend that runs the whole loop in compiled
    code: the body on the carry, then the condition on the new carry as its last output. Its
    inputs are the while's operands, in order: the condition's constants, the body's, the carry."""
    p = node.params
    cond, body, n_cond = p["cond_body"], p["body"], p["num_cond_consts"]
    cond_consts = [ops.make("input", shape=n.shape, dtype=n.dtype, weak=n.weak) for n in cond.inputs[:n_cond]]
    body_inputs = [ops.make("input", shape=n.shape, dtype=n.dtype, weak=n.weak) for n in body.inputs]
    carry = substitute(body.outputs, {id(i): a for i, a in zip(body.inputs, body_inputs)})
    flag = substitute(cond.outputs, {id(i): a for i, a in zip(cond.inputs, cond_consts + carry)})
    return _distinct_outputs(Program(cond_consts + body_inputs, carry + flag, f"{body.name}_step"))


def _compiled_body(node, body):
    """The program compiled for ``body`` of control-flow ``node``: a scan's with distinct outputs."""
    return _distinct_outputs(body) if node.op == "scan" else body


def _distinct_outputs(program):
    """``program`` returning each output as a value of its own, which a kernel writes: a value
    returned twice or a view of another is copied (``stop_gradient``, the identity), so
    that a compiled loop can have the kernels write every output in place (a carry in its
    buffer, a stacked value in its row)."""
    seen, outputs = set(), []
    for o in program.outputs:
        if id(o) in seen or o.op in ops.VIEWS:
            o = ops.make("stop_gradient", (o,))
        seen.add(id(o))
        outputs.append(o)
    return Program(program.inputs, outputs, program.name)


def _value(env, node):
    if node.op == "const":
        return node.params["value"]
    if node.op == "element":
        return env[id(node.args[0])][node.params["index"]]
    return env[id(node)]


def _copy(value):
    return value.copy() if hasattr(value, "copy") and not arrays.on_gpu(value) else _device_copy(value)


def _device_copy(value):
    from numba import cuda
    out = cuda.device_array(value.shape, value.dtype)
    out.copy_to_device(value)
    return out


def _levels(program):
    """The stage of each node: a control-flow op runs in the stage of its latest operand, its
    values (``element``) are ready from the next one."""
    level = {}
    for n in program.nodes:
        if n.op in ops.LEAVES:
            level[id(n)] = 0
        elif n.op == "element":
            level[id(n)] = level[id(n.args[0])] + 1
        else:
            level[id(n)] = max(level[id(a)] for a in n.args)
    return level


class _Piece:
    """The loop-free ``nodes`` of one stage as a program of their own: its inputs are the values
    they read from earlier stages, its outputs the values later stages (or the results) read."""

    def __init__(self, program, nodes, name):
        inside = {id(n) for n in nodes}
        later = {id(a) for n in program.nodes if id(n) not in inside for a in n.args} | \
            {id(o) for o in program.outputs}
        clone, self.inputs = {}, []
        for n in nodes:
            for a in n.args:
                if id(a) not in inside and id(a) not in clone and a.op != "const":
                    clone[id(a)] = ops.make("input", shape=a.shape, dtype=a.dtype, weak=a.weak)
                    self.inputs.append(a)
            args = [clone.get(id(a), a) for a in n.args]
            clone[id(n)] = Node(n.op, args, n.params, n.shape, n.dtype, n.weak, n.where)
        self.outputs = [n for n in nodes if id(n) in later]
        self.program = Program([clone[id(a)] for a in self.inputs], [clone[id(n)] for n in self.outputs], name)
        self.origin = {id(clone[id(n)]): n for n in nodes}


# --------------------------------------------------------------------------- the host's loops

def _device_slice(x, t):
    """``x[t]`` of a GPU array, as an array (a view; a 0-d element stays an array there too)."""
    return x[t:t + 1].reshape(x.shape[1:])


def _device_store(ys, t, value):
    ys[t:t + 1].copy_to_device(arrays.as_cuda_array(value).reshape((1,) + ys.shape[1:]))


def _host_store(ys, t, value):
    ys[t] = value


def _scan(staged, node, args):
    p = node.params
    body, n_consts, n_carry = staged.body(p["body"]), p["num_consts"], p["num_carry"]
    consts, carry, xs = args[:n_consts], args[n_consts:n_consts + n_carry], args[n_consts + n_carry:]
    compiled = getattr(body, "scan", None)  # a backend that runs the whole loop in compiled code
    done = compiled(consts, carry, xs, p["length"], p["reverse"]) if compiled else None
    if done is not None:
        return done
    on_gpu = any(arrays.on_gpu(a) for a in args)
    if on_gpu:
        from numba import cuda
        ys = [cuda.device_array(s, d) for s, d in p["types"][n_carry:]]
        take, store = _device_slice, _device_store
    else:
        ys = [np.empty(s, d) for s, d in p["types"][n_carry:]]
        take, store = (lambda x, t: x[t]), _host_store
    for t in reversed(range(p["length"])) if p["reverse"] else range(p["length"]):
        out = body(*consts, *carry, *[take(x, t) for x in xs])
        carry = out[:n_carry]
        for y, value in zip(ys, out[n_carry:]):
            store(y, t, value)
    return tuple(carry) + tuple(ys)


def _while(staged, node, args):
    p = node.params
    test, body = staged.body(p["cond_body"]), staged.body(p["body"])
    n_test, n_body = p["num_cond_consts"], p["num_body_consts"]
    test_consts, body_consts, carry = args[:n_test], args[n_test:n_test + n_body], args[n_test + n_body:]
    if not bool(arrays.to_host(test(*test_consts, *carry)[0])):
        return tuple(carry)
    fused = staged._while_steps.get(id(node))  # (a backend that runs the whole loop in compiled code)
    done = fused.while_loop(args[:n_test + n_body], carry) if fused is not None else None
    if done is not None:
        return done
    while True:
        carry = body(*body_consts, *carry)
        if not bool(arrays.to_host(test(*test_consts, *carry)[0])):
            return tuple(carry)


def _cond(staged, node, args):
    branches = node.params["branches"]
    index = branch_index(arrays.to_host(args[0]), len(branches))
    return tuple(staged.body(branches[index])(*args[1:]))


def _checkpoint(staged, node, args):
    return tuple(staged.body(node.params["body"])(*args))


RUN = {"scan": _scan, "while": _while, "cond": _cond, "checkpoint": _checkpoint}
