"""The host time of a replayed CUDA call, measured without a GPU: what Python does between the
user's call and the graph launch, and after it (choosing the graph, handing out the results as
numba arrays). Real numba device arrays over stand-in addresses, a graph whose launch does
nothing; on a GPU, CuPy's graph launch (a few microseconds) comes on top, and
``benchmarks/cuda_overhead.py`` measures the whole call.

    NUMBA_ENABLE_CUDASIM=0 python -m benchmarks.replay_host_time [CALLS REPEATS]
"""
import sys
import timeit
import types

import numpy as np

from jitgrad.codegen.numba_cuda import backend, graphs, launch
from jitgrad.frontend import api
from tests.cuda_packing_check import _CupyLike, device_array, stand_in_context

F32 = np.float32
MLP_TRAIN_PARAMS = [((784, 512), F32), ((512,), F32), ((512, 512), F32), ((512,), F32), ((512, 10), F32), ((10,), F32)]
WORKLOADS = {  # name: (inputs, results) as (shape, dtype), the SPEC workloads' signatures
    "mlp2": ([((1000, 100), F32), ((100, 10), F32), ((64, 1000), F32), ((64, 10), F32)],
             [((), F32), ((1000, 100), F32), ((100, 10), F32)]),
    "mlp_train": (MLP_TRAIN_PARAMS + [((256, 784), F32), ((256,), np.int32)], [((), F32)] + MLP_TRAIN_PARAMS),
}


class _Node:
    def __init__(self, shape, dtype):
        self.shape, self.dtype, self.size = shape, np.dtype(dtype), int(np.prod(shape))


class _Graph:
    def launch(self, stream):
        pass


def replayed_call(inputs, results):
    """A jitted function (fast path) whose executable replays one recorded graph over these
    arguments in place into a leased result block, and the arguments."""
    inputs, results = [_Node(*i) for i in inputs], [_Node(*r) for r in results]
    args = [device_array(n.shape, n.dtype, 0x1000000 * (i + 1)) for i, n in enumerate(inputs)]
    replay = object.__new__(graphs.Replay)
    replay.stream, replay.copies, replay.copied_out, replay.failed = types.SimpleNamespace(ptr=0), False, None, False
    replay.offsets, replay.shared, replay.nbytes = graphs.block_layout(results)
    replay.layouts = [(r.shape, r.dtype, r.size * r.dtype.itemsize) for r in results]
    block = object.__new__(graphs._ResultBlock)
    block.replay, block.block, block.lease, block.views, block.address = replay, None, None, None, 0x9000000
    key = tuple(launch.address(a) for a in args)
    replay.leased, replay.input_keys, replay.recent, replay.graphs = [block], {key}, [], {(key, block): _Graph()}
    executable = object.__new__(backend.Executable)
    executable.replay, executable._checks_indices = replay, False
    jitted = api.Jitted(lambda *a: None, device="cuda")
    out_def = api.flatten((0.0, (0,) * (len(results) - 1)))[1]
    jitted._fast[jitted._fast_key(args)[0]] = api._runner(executable, out_def, types.SimpleNamespace(effects=()))
    return jitted, args


def main(calls=3000, repeats=40):
    stand_in_context()
    launch.from_cupy(_CupyLike(shape=(1,), typestr="<f4", data=(0x10000, False)))  # checks the quick views
    print(f"quick views: {launch.from_cupy.checked}")
    for name, (inputs, results) in WORKLOADS.items():
        jitted, args = replayed_call(inputs, results)
        best = min(timeit.repeat(lambda: jitted(*args), number=calls, repeat=repeats)) / calls
        print(f"{name}: {len(inputs)} arguments, {len(results)} results: "
              f"{best * 1e6:.1f} us a call (best of {repeats})")


if __name__ == "__main__":
    main(*map(int, sys.argv[1:3]))
