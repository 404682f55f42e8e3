"""Fresh result arrays: a large one lies in a buffer an earlier call's result left, once the
caller has let go of it (a fresh page costs a page fault and its zeroing, as much as writing it)."""
import numpy as np


RECYCLED_BYTES = 1 << 20


class _Recycled:
    """The owner of a large result's buffer: the result and every view of it keep it alive, and
    once the caller has let go of them all, the buffer goes back to its executable (``free``) for
    a later call. A fresh large array costs a page fault, and the kernel zeroing the page, for
    every page: as much time as writing it again (graph_xyz, 3 x 64 MB results: 39-40 ms a call
    fresh, 20-24 ms recycled, on the 2-core machine, whose memory bandwidth makes ~20 ms the floor)."""
    __slots__ = ("buffer", "free", "__array_interface__")

    def __init__(self, buffer, face, free):
        self.buffer, self.free, self.__array_interface__ = buffer, free, face

    def __del__(self):
        if not self.free:  # one spare: a loop holds one call's results while the next call runs
            self.free.append((self.buffer, self.__array_interface__))


def result(layout, free):
    """A fresh result array: from NumPy, or for a large one a recycled buffer (``_Recycled``)."""
    if free is None:
        return np.empty(*layout)
    try:
        buffer, face = free.pop()
    except IndexError:
        buffer = np.empty(*layout)
        face = buffer.__array_interface__
    return np.asarray(_Recycled(buffer, face, free))
