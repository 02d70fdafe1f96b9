"""S5 ops: HiPPO-N block init, scan against a plain lax.scan loop, bidirectional,
step == parallel, packed sequences, length 1, gradients (numerically for the reference mode,
the other modes against it), long inputs, bfloat16 inputs, x64."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from sequax.ops.ssm import s4, s5

B, L, H, P = 2, 16, 3, 8
P2 = P // 2


def close(x, ref, tol=1e-5):
    ref = np.asarray(ref)
    np.testing.assert_allclose(np.asarray(x), ref, rtol=tol, atol=tol * np.abs(ref).max())


@functools.lru_cache(maxsize=None)
@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def params(seed=0, bidirectional=False, discretization="zoh"):
    """Discretised S5 parameters from the block HiPPO-N init and random B, C, D."""
    k = jax.random.split(jax.random.PRNGKey(seed), 4)
    Lambda, V = s5.s5_init(P, blocks=2)
    B_tilde = jnp.conj(V).T @ jax.random.normal(k[0], (P, H))
    C_shape = (2, H, P) if bidirectional else (H, P)
    C_tilde = (jax.random.normal(k[1], C_shape) / np.sqrt(P)) @ V
    log_dt = jax.random.uniform(k[2], (P2,), minval=np.log(1e-2), maxval=np.log(0.5))
    Lambda_bar, B_bar = s5.s5_discretize(Lambda, B_tilde, log_dt, discretization)
    return Lambda_bar, B_bar, C_tilde, jax.random.normal(k[3], (H,))


def inputs(seed=1, length=L, batch=B):
    return jax.random.normal(jax.random.PRNGKey(seed), (batch, length, H))


def reference(Lambda_bar, B_bar, C_tilde, D, u, segment_ids=None):
    """Plain lax.scan over time (one direction), restarting at segment starts."""
    seg = jnp.zeros(u.shape[:2], jnp.int32) if segment_ids is None else jnp.asarray(segment_ids)
    prev = jnp.concatenate([seg[:, :1], seg[:, :-1]], axis=1)

    def body(x, inp):
        u_t, reset = inp
        x = jnp.where(reset[:, None], 0, Lambda_bar * x) + u_t.astype(jnp.complex64) @ B_bar.T
        return x, 2 * (x @ C_tilde.T).real + D * u_t

    x0 = jnp.zeros((u.shape[0], Lambda_bar.shape[0]), jnp.complex64)
    _, y = jax.lax.scan(body, x0, (jnp.swapaxes(u, 0, 1), (seg != prev).T))
    return jnp.swapaxes(y, 0, 1)


apply = jax.jit(s5.s5_apply, static_argnames=("bidirectional", "return_state", "mode"))


def test_hippo_n_is_normal_part_of_legs():
    A_n, B_n = map(np.asarray, s5.hippo_n(6))
    A, B_legs = map(np.asarray, s4.hippo_legs(6))
    p = np.sqrt(np.arange(6) + 0.5)
    close(A_n, A + np.outer(p, p), 1e-6)
    close(B_n, B_legs)
    close(A_n @ A_n.T, A_n.T @ A_n, 1e-5)  # normal
    close(A_n + A_n.T, -np.eye(6), 1e-6)  # -I/2 + skew


def test_block_init_diagonalises_block_hippo_n():
    Lambda, V = map(np.asarray, s5.s5_init(12, blocks=3))
    W = np.concatenate([V, V.conj()], axis=1)  # full eigenvectors: conjugate pairs
    lam = np.concatenate([Lambda, Lambda.conj()])
    A_block = np.kron(np.eye(3), np.asarray(s5.hippo_n(4)[0]))
    close(W @ np.diag(lam) @ W.conj().T, A_block, 2e-6)
    close(W.conj().T @ W, np.eye(12), 2e-6)
    assert np.all(Lambda.imag > 0)


BAD = (jnp.ones(4), jnp.ones((4, 3)), jnp.ones((3, 4)), jnp.ones(3))  # shapes for H=3, P2=4


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: s5.s5_init(12, blocks=4), "state_size / blocks must be an even int"),
        (lambda: s5.s5_init(7), "state_size must be even"),
        (lambda: s5.s5_discretize(*BAD[:2], jnp.zeros(3)), r"log_dt must be \[P2\]"),
        (lambda: s5.s5_discretize(*BAD[:2], jnp.zeros(4), "euler"), "discretization"),
        (lambda: s5.s5_apply(*BAD, jnp.ones((1, 4, 2))), r"B_bar must be \[P2, H\]"),
        (lambda: s5.s5_apply(*BAD, jnp.ones((1, 4, 3)), bidirectional=True), "C_tilde must be"),
        (lambda: s5.s5_apply(*BAD, jnp.ones((1, 4, 3)), bidirectional=True, return_state=True),
         "need a causal scan"),
        (lambda: s5.s5_apply(*BAD, jnp.ones((1, 4, 3), jnp.int32)), "u must be a float"),
        (lambda: s5.s5_apply(*BAD, jnp.ones((0, 4, 3))), "batch >= 1 and length >= 1"),
        (lambda: s5.s5_apply(*BAD, jnp.ones((1, 0, 3))), "batch >= 1 and length >= 1"),
        (lambda: s5.s5_apply(*BAD, jnp.ones((1, 4, 3)), segment_ids=jnp.zeros((2, 4), jnp.int32)),
         r"segment_ids must be an int array \[batch, length\]"),
        (lambda: s5.s5_step(*BAD[:3], BAD[3], jnp.ones((1, 3), jnp.int32), jnp.zeros((1, 4))),
         "u_t must be a float"),
    ],
)
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("disc", ["zoh", "bilinear"])
def test_associative_equals_lax_scan_loop(disc):
    p, u = params(discretization=disc), inputs()
    close(apply(*p, u), reference(*p, u))


def test_packed_segments_restart_the_state():
    p, u = params(), inputs()
    seg = jnp.array([[0] * 5 + [1] * 7 + [2] * 4, [0] * 16])
    close(apply(*p, u, segment_ids=seg), reference(*p, u, seg))


def test_bidirectional_is_two_one_directional_runs():
    Lambda_bar, B_bar, C, D = params(bidirectional=True)
    u = inputs()
    one_segment = jnp.zeros((B, L), jnp.int32)  # same compile as the packed case below
    y = apply(Lambda_bar, B_bar, C, D, u, bidirectional=True, segment_ids=one_segment)
    fwd = apply(Lambda_bar, B_bar, C[0], D, u)
    bwd = jnp.flip(apply(Lambda_bar, B_bar, C[1], jnp.zeros(H), jnp.flip(u, 1)), 1)
    close(y, fwd + bwd)
    # packed: each segment's outputs ignore the other segment's inputs (both directions)
    seg = jnp.array([[0] * 6 + [1] * 10] * 2)
    y_seg = apply(Lambda_bar, B_bar, C, D, u, bidirectional=True, segment_ids=seg)
    for part in (slice(0, 6), slice(6, None)):
        other = jnp.ones(L, bool).at[part].set(False)[None, :, None]
        u_alt = jnp.where(other, 3.0 - u, u)
        y_alt = apply(Lambda_bar, B_bar, C, D, u_alt, bidirectional=True, segment_ids=seg)
        close(y_alt[:, part], y_seg[:, part])
        assert not np.allclose(y_alt, y_seg)


def test_step_equals_parallel_and_state_carries():
    p, u = params(), inputs()
    y, final = apply(*p, u, return_state=True)

    def body(state, u_t):
        y_t, state = s5.s5_step(*p, u_t, state)
        return state, y_t

    state0 = jnp.zeros((B, P2), jnp.complex64)
    state, ys = jax.jit(lambda u: jax.lax.scan(body, state0, jnp.swapaxes(u, 0, 1)))(u)
    close(jnp.swapaxes(ys, 0, 1), y)
    close(state, final)
    # two halves with the state carried in between
    y1, s1 = apply(*p, u[:, :8], initial_state=jnp.zeros((B, P2), jnp.complex64), return_state=True)
    y2, _ = apply(*p, u[:, 8:], initial_state=s1, return_state=True)
    close(jnp.concatenate([y1, y2], 1), y)


def _grad_setup():
    Lambda, V = s5.s5_init(P, blocks=2)
    k = jax.random.split(jax.random.PRNGKey(3), 2)
    B_re = jax.random.normal(k[0], (P2, H)) * 0.5
    C_re = jax.random.normal(k[1], (H, P2)) * 0.5
    log_dt = jnp.full((P2,), np.log(0.1), jnp.float32)
    return (Lambda.real, Lambda.imag, B_re, C_re, log_dt, inputs(length=8))


@functools.partial(jax.jit, static_argnames=("mode",))
def _loss(lam_re, lam_im, B_re, C_re, log_dt, u, mode=None):
    Lb, Bb = s5.s5_discretize(lam_re + 1j * lam_im, B_re + 0.3j, log_dt)
    seg = jnp.asarray([[0] * 3 + [1] * 5, [2] * 8])
    y = s5.s5_apply(Lb, Bb, C_re - 0.2j, jnp.ones(H), u, segment_ids=seg, mode=mode, chunk_size=4)
    return jnp.sum(y * jnp.cos(jnp.arange(y.size).reshape(y.shape)))


def test_grads_s5_apply_numerically():
    """The sequential scan's gradients against central differences (float32 math)."""
    check_grads(functools.partial(_loss, mode="sequential"), _grad_setup(), order=1, modes=["rev"],
                eps=1e-2, atol=2e-3, rtol=2e-3)


@pytest.mark.parametrize("mode", ["associative", "chunked"])
def test_grads_match_the_sequential_scan(mode):
    args = _grad_setup()
    grad = jax.jit(jax.grad(_loss, argnums=tuple(range(6))), static_argnames=("mode",))
    for g, r in zip(grad(*args, mode=mode), grad(*args, mode="sequential")):
        close(g, r, 1e-5)


@pytest.mark.parametrize("mode", ["sequential", "associative", "chunked"])
def test_length_one(mode):
    p, u = params(), inputs(length=1)
    state = jax.random.normal(jax.random.PRNGKey(5), (B, P2)) + 0j
    y, final = apply(*p, u, initial_state=state, return_state=True, mode=mode)
    y_ref, final_ref = s5.s5_step(*p, u[:, 0], state)
    close(y[:, 0], y_ref)
    close(final, final_ref)


def test_x64_keeps_the_input_dtype():
    p, u = params(), inputs()
    ref = reference(*p, u)
    with jax.enable_x64(True):
        for dtype in (jnp.float32, jnp.float64):
            y = jax.jit(s5.s5_apply)(*p, u.astype(dtype))
            assert y.dtype == dtype
            close(y, ref)


def test_long_sequence_is_finite():
    p = params()
    u = inputs(length=65536, batch=1)
    y = apply(*p, u)
    assert y.shape == (1, 65536, H) and bool(jnp.all(jnp.isfinite(y)))


def test_bf16_input_error_bound():
    """bfloat16 input, computed in float32, returned in bf16.

    Bound: y = G * u + D u is linear with impulse response
    G_l = 2 Re(C̃ diag(Λ̄^l) B̄) ``[H, H]``, so rounding the input (relative
    error <= 2^-8: bf16 has 8 significant bits) moves output channel h by at
    most (sum_l sum_j |G_l[h, j]| + |D_h|) * 2^-8 * max|u|; rounding the output
    adds <= 2^-8 |y|. A 1% slack covers float32 scan error.
    """
    Lambda_bar, B_bar, C, D = p = params()
    u = inputs()
    y32 = apply(*p, u)
    y16 = apply(*p, u.astype(jnp.bfloat16))
    assert y16.dtype == jnp.bfloat16
    lb, bb, c = (np.asarray(x, np.complex128) for x in (Lambda_bar, B_bar, C))
    gain = sum(np.abs(2 * ((c * lb**l) @ bb).real).sum(1) for l in range(L)) + np.abs(np.asarray(D))
    bound = 2.0**-8 * (gain * float(jnp.abs(u).max()) + np.abs(np.asarray(y32))) * 1.01 + 1e-6
    err = np.abs(np.asarray(y16, np.float32) - np.asarray(y32))
    assert np.all(err <= bound), float(np.max(err / bound))
