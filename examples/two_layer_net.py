"""The lecture's two-layer ReLU network (N=64, D=1000, H=100, D_out=10), trained with SGD.

The loss is plain NumPy; ``@jg.jit_grad`` gives its value and the gradients of both weight
matrices. Before training, the gradients are checked against a hand-written backward pass.
"""
import time

import numpy as np

import jitgrad as jg

N, D, H, D_OUT = 64, 1000, 100, 10


@jg.jit_grad(argnums=(0, 1))
def loss(w1, w2, x, y):
    h = np.maximum(x @ w1, 0)
    y_pred = h @ w2
    return np.sum((y_pred - y) ** 2)


def numpy_value_and_grad(w1, w2, x, y):
    """What people write by hand without a framework."""
    h = np.maximum(x @ w1, 0)
    y_pred = h @ w2
    loss = np.sum((y_pred - y) ** 2)
    grad_y_pred = 2.0 * (y_pred - y)
    grad_w2 = h.T @ grad_y_pred
    grad_h = grad_y_pred @ w2.T
    grad_h[h <= 0] = 0
    grad_w1 = x.T @ grad_h
    return loss, (grad_w1, grad_w2)


def main(steps=200, learning_rate=1e-6):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((N, D)), rng.standard_normal((N, D_OUT))
    w1, w2 = rng.standard_normal((D, H)), rng.standard_normal((H, D_OUT))

    value, (dw1, dw2) = loss(w1, w2, x, y)
    ref_value, (ref_dw1, ref_dw2) = numpy_value_and_grad(w1, w2, x, y)
    err = max(np.abs(dw1 - ref_dw1).max() / np.abs(ref_dw1).max(), np.abs(dw2 - ref_dw2).max() / np.abs(ref_dw2).max())
    print(f"gradient check vs hand-written NumPy backward: max relative error {err:.2e} "
          f"({'OK' if err < 1e-10 else 'MISMATCH'})")
    assert err < 1e-10 and np.isclose(value, ref_value)

    start = time.perf_counter()
    for step in range(steps):
        value, (dw1, dw2) = loss(w1, w2, x, y)
        w1 -= learning_rate * dw1
        w2 -= learning_rate * dw2
        if step % 20 == 0 or step == steps - 1:
            print(f"step {step:3d}  loss {float(value):14.4f}")
    per_step = (time.perf_counter() - start) / steps
    lowered = loss.lower(w1, w2, x, y)
    print(f"{steps} SGD steps, {per_step * 1e3:.2f} ms per step on device {lowered.device!r}")
    print("\nthe optimized IR that runs (value and both gradients):")
    print(lowered.ir)


if __name__ == "__main__":
    main()
