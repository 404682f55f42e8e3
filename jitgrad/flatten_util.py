"""A pytree as one flat vector, and back (JAX's ``jax.flatten_util``): for code that works on
flat parameter vectors, such as ``scipy.optimize.minimize`` or autograd's ``flatten``.

>>> import numpy as np, jitgrad as jg
>>> flat, unravel = jg.flatten_util.ravel_pytree({"w": np.ones((2, 2)), "b": np.zeros(2)})
>>> flat
array([0., 0., 1., 1., 1., 1.])
>>> unravel(flat)["w"].shape
(2, 2)
"""
import numpy as np

from .frontend import numpy_api as jnp
from .frontend.tree import flatten, unflatten


def ravel_pytree(pytree):
    """``(flat, unravel)``: the leaves of ``pytree`` (dicts in sorted key order, as jitgrad
    flattens them) raveled and concatenated into one 1-d array of their common dtype, and the
    function that splits such a vector back into the pytree, each leaf in its own shape and dtype.
    Works on traced values too, so gradients flow through both directions.

    >>> flat, unravel = jg.flatten_util.ravel_pytree([np.ones(2), (np.float32(3.0),)])
    >>> flat, unravel(2 * flat)
    (array([1., 1., 3.]), [array([2., 2.]), (array(6., dtype=float32),)])
    """
    leaves, treedef = flatten(pytree)
    shapes = [jnp.shape(leaf) for leaf in leaves]
    dtypes = [jnp.result_type(leaf) for leaf in leaves]
    flat = jnp.concatenate([jnp.ravel(leaf) for leaf in leaves]) if leaves else np.zeros(0)
    bounds = np.cumsum([int(np.prod(s)) for s in shapes])[:-1].tolist()

    def unravel(vector):
        if jnp.shape(vector) != jnp.shape(flat):
            raise ValueError(f"unravel expects a vector of shape {jnp.shape(flat)}, got {jnp.shape(vector)}")
        pieces = jnp.split(vector, bounds) if leaves else []
        return unflatten(treedef, [jnp.cast(jnp.reshape(p, s), d) for p, s, d in zip(pieces, shapes, dtypes)])

    return flat, unravel
