"""Token-by-token decoding of any recurrent mixer."""

import jax
import jax.numpy as jnp


def decode(module, variables, x):
    """Run ``module.step`` over every position of ``x`` in one ``lax.scan``.

    ``x`` ``[batch, length, d_model]`` -> ``[batch, length, d_model]``, starting
    from ``module.init_state(batch)``; for a causal mixer this equals
    ``module.apply(variables, x)``. Wrap it in ``jax.jit`` to compile once.

    A mixer whose state has a fixed capacity (attention's full KV cache)
    defines ``check_decode_length(length)``; it is called first, so a sequence
    longer than the state can hold raises its ``ValueError`` (naming the field
    to change, e.g. ``decode_cache_size``) before anything runs.
    """
    check = getattr(module, "check_decode_length", None)
    if check is not None:
        check(x.shape[1])
    state = module.apply(variables, x.shape[0], method="init_state")

    def body(state, x_t):
        y_t, state = module.apply(variables, x_t, state, method="step")
        return state, y_t

    _, ys = jax.lax.scan(body, state, jnp.swapaxes(x, 0, 1))
    return jnp.swapaxes(ys, 0, 1)
