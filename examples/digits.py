"""Handwritten digits (scikit-learn's 8x8 ``load_digits``, shipped in its wheel: no download) with
a 64-128-10 MLP: ReLU, dropout on the hidden layer (its mask drawn inside the compiled step with
``jitgrad.random``), softmax cross-entropy, minibatch SGD with momentum (``jitgrad.optim``).
Prints train and test accuracy per epoch and writes a loss/accuracy plot.

    python examples/digits.py                  # writes digits.png in the current directory
    python examples/digits.py out.png --epochs 40 --device numpy

The loss is plain NumPy; ``jg.jit_grad`` gives its value and the gradients of every parameter in
the dict. With the defaults it reaches about 97% test accuracy (the run asserts at least 95%).
"""
import argparse
import time

import numpy as np

import jitgrad as jg

HIDDEN, CLASSES = 128, 10
DROPOUT = 0.2         # probability of zeroing a hidden unit while training
TEST_ACCURACY_FLOOR = 0.95


def load(test_fraction=0.25, seed=0):
    """Pixels scaled to [0, 1] as float32, integer labels; a stratified train/test split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    return train_test_split(x, y, test_size=test_fraction, stratify=y, random_state=seed)


def init_params(rng, n_in, hidden=HIDDEN, classes=CLASSES):
    """He-initialized weights, zero biases, float32."""
    def he(fan_in, fan_out):
        return (rng.standard_normal((fan_in, fan_out)) * np.sqrt(2.0 / fan_in)).astype(np.float32)
    return {"w1": he(n_in, hidden), "b1": np.zeros(hidden, np.float32),
            "w2": he(hidden, classes), "b2": np.zeros(classes, np.float32)}


def logits(params, x, key=None):
    """The MLP; with a ``key`` (training), inverted dropout on the hidden units: each is zeroed
    with probability ``DROPOUT``, the others scaled by 1 / (1 - DROPOUT)."""
    h = jg.nn.relu(x @ params["w1"] + params["b1"])
    if key is not None:
        keep = jg.random.bernoulli(key, 1.0 - DROPOUT, h.shape)
        h = np.where(keep, h / np.float32(1.0 - DROPOUT), np.float32(0.0))
    return h @ params["w2"] + params["b2"]


def loss(params, x, labels, key):
    return jg.nn.cross_entropy(logits(params, x, key), labels)


def predict(params, x):
    return np.argmax(logits(params, x), axis=-1)


def train(epochs=30, batch=64, lr=0.05, device=None, subset=None, seed=0, log=print):
    """Train on the digits; returns the per-epoch history (loss, train and test accuracy)."""
    x_train, x_test, y_train, y_test = load()
    if subset is not None:
        x_train, y_train = x_train[:subset], y_train[:subset]
    rng = np.random.default_rng(seed)
    params = init_params(rng, x_train.shape[1])
    step = jg.jit_grad(loss, device=device)
    classify = jg.jit(predict, device=device)
    optimizer = jg.optim.sgd(lr, momentum=0.9, device=device)
    state = optimizer.init(params)
    key = jg.random.key(seed)
    history = {"loss": [], "train_accuracy": [], "test_accuracy": []}
    start = time.perf_counter()
    for epoch in range(epochs):
        order = rng.permutation(len(x_train))
        losses = []
        for first in range(0, len(order) - batch + 1, batch):  # whole batches only: one signature
            rows = order[first:first + batch]
            key, dropout_key = jg.random.split(key)
            value, grads = step(params, x_train[rows], y_train[rows], dropout_key)
            params, state = optimizer.update(grads, state, params)
            losses.append(float(value))
        history["loss"].append(float(np.mean(losses)))
        history["train_accuracy"].append(float(np.mean(classify(params, x_train) == y_train)))
        history["test_accuracy"].append(float(np.mean(classify(params, x_test) == y_test)))
        log(f"epoch {epoch + 1:3d}  loss {history['loss'][-1]:.4f}  train accuracy "
            f"{history['train_accuracy'][-1]:.3f}  test accuracy {history['test_accuracy'][-1]:.3f}")
    history["seconds"] = time.perf_counter() - start
    history["steps"] = epochs * (len(x_train) // batch)
    return history


def plot(history, path):
    """Loss and accuracy per epoch, side by side, as a PNG at ``path``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = np.arange(1, len(history["loss"]) + 1)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(epochs, history["loss"])
    left.set(xlabel="epoch", ylabel="training loss (cross-entropy)", yscale="log")
    right.plot(epochs, history["train_accuracy"], label="train")
    right.plot(epochs, history["test_accuracy"], label="test")
    right.set(xlabel="epoch", ylabel="accuracy", ylim=(0.8, 1.0))
    right.legend()
    fig.suptitle("64-128-10 MLP on scikit-learn's digits, trained with jitgrad")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("plot", nargs="?", default="digits.png", help="where to write the PNG (default: digits.png)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--device", default=None, help="cpu (default), numpy or cuda")
    args = parser.parse_args(argv)
    history = train(epochs=args.epochs, device=args.device)
    plot(history, args.plot)
    test_accuracy = history["test_accuracy"][-1]
    print(f"{history['steps']} steps in {history['seconds']:.1f} s; test accuracy {test_accuracy:.3f}; "
          f"plot written to {args.plot}")
    assert test_accuracy >= TEST_ACCURACY_FLOOR, f"test accuracy {test_accuracy:.3f} is below {TEST_ACCURACY_FLOOR}"


if __name__ == "__main__":
    main()
