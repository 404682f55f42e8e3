import numpy as np

import jitgrad as jg  # noqa: F401  (the package imports)
from tests.helpers import check_grad


def test_lecture_graph():
    rng = np.random.default_rng(0)
    x, y, z = rng.standard_normal((3, 5))
    check_grad(lambda x, y, z: np.sum(x * y + z), (x, y, z), argnums=(0, 1, 2))


def test_two_layer_net():
    rng = np.random.default_rng(0)
    w1, w2 = rng.standard_normal((6, 4)), rng.standard_normal((4, 3))
    x, y = rng.standard_normal((5, 6)), rng.standard_normal((5, 3))

    def loss(w1, w2, x, y):
        return np.sum((np.maximum(x @ w1, 0) @ w2 - y) ** 2)

    check_grad(loss, (w1, w2, x, y), argnums=(0, 1))
