"""S4/S4D ops: HiPPO inits, discretisation, kernels against explicit matrix powers,
recurrence against convolution, gradients, long kernels, bfloat16 inputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from sequax.ops.fftconv import fft_conv
from sequax.ops.ssm import s4

H, N, L = 3, 8, 16
N2 = N // 2
# Jitted entry points: one compile per shape instead of one per primitive (much
# faster on a busy CPU than eager dispatch). Lengths and modes are static.
s4d_kernel = jax.jit(s4.s4d_kernel, static_argnums=(4, 5))
s4_dplr_kernel = jax.jit(s4.s4_dplr_kernel, static_argnums=5)
s4_c_tilde = jax.jit(s4.s4_c_tilde, static_argnums=4)
s4_dplr_recurrence = jax.jit(s4.s4_dplr_recurrence, static_argnums=5)
conv = jax.jit(fft_conv)
LOG_DT = np.log([0.01, 0.1, 0.5]).astype(np.float32)


def close(x, ref, tol=1e-5):
    ref = np.asarray(ref)
    np.testing.assert_allclose(np.asarray(x), ref, rtol=tol, atol=tol * np.abs(ref).max())


def crandn(rng, *shape):
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) / np.sqrt(2)


def diag_params(seed=0):
    """Random stable diagonal parameters [H, N2] (complex128) for reference checks."""
    rng = np.random.default_rng(seed)
    lam = -rng.uniform(0.1, 1.0, (H, N2)) + 1j * rng.uniform(-3, 3, (H, N2))
    return lam, crandn(rng, H, N2), crandn(rng, H, N2)


def causal_conv_np(u, k):
    """y[b, t, h] = sum_s k[s, h] u[b, t - s, h]."""
    return np.stack(
        [np.stack([np.convolve(u[b, :, h], k[:, h])[: u.shape[1]] for h in range(u.shape[2])], -1)
         for b in range(u.shape[0])]
    )


# ----------------------------------------------------------------- HiPPO


def test_hippo_legs_definition():
    A, B = map(np.asarray, s4.hippo_legs(5))
    for n in range(5):
        assert B[n] == pytest.approx(np.sqrt(2 * n + 1))
        for k in range(5):
            want = -np.sqrt((2 * n + 1) * (2 * k + 1)) if n > k else (-(n + 1) if n == k else 0.0)
            assert A[n, k] == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("n", [2, 8, 32])
def test_nplr_reconstructs_legs(n):
    A, B = map(np.asarray, s4.hippo_legs(n))
    Lam, P, Bt, V = map(np.asarray, s4.nplr_legs(n))
    close(V @ (np.diag(Lam) - np.outer(P, P.conj())) @ V.conj().T, A, 2e-6)
    close(V @ Bt, B, 2e-6)
    close(V.conj().T @ V, np.eye(n), 2e-6)  # unitary
    close(Lam.real, -0.5 * np.ones(n))
    h = n // 2
    assert np.all(Lam[:h].imag > 0) and np.all(np.diff(Lam[:h].imag) > 0)
    for x in (Lam, P, Bt, V.T):  # second half = conjugates of the first, same order
        close(x[h:], x[:h].conj())


def test_s4d_inits():
    n = np.arange(4)
    lin, b = map(np.asarray, s4.s4d_init(8, "lin"))
    close(lin, -0.5 + 1j * np.pi * n)
    close(b, np.ones(4))
    inv, _ = s4.s4d_init(8, "inv")
    close(inv, -0.5 + 1j * 8 / np.pi * (8 / (2 * n + 1) - 1))
    real, _ = s4.s4d_init(8, "real")
    close(real, -(n + 1.0))
    legs, b_legs = s4.s4d_init(8, "legs")
    Lam, _, Bt, _ = s4.nplr_legs(8)
    close(legs, Lam[:4])
    close(b_legs, Bt[:4])


LAM = -np.ones((2, 4))  # Lambda for H=2, N2=4


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: s4.nplr_legs(7), "N must be even"),
        (lambda: s4.s4d_init(8, "cosine"), "kind must be one of"),
        (lambda: s4.hippo_legs(0), "N must be a positive int"),
        (lambda: s4.s4d_kernel(LAM, 1.0, 1.0, np.zeros(3), 8), r"log_dt must be \[H\]"),
        (lambda: s4.s4d_kernel(LAM, np.ones(3), 1.0, np.zeros(2), 8), "B must broadcast"),
        (lambda: s4.s4d_kernel(LAM, 1.0, 1.0, np.zeros(2), 0), "L .* positive int"),
        (lambda: s4.s4d_kernel(LAM, 1.0, 1.0, np.zeros(2), 8, "euler"), "discretization"),
        (lambda: s4.s4_dplr_kernel(np.ones(4), 1, 1, 1, np.zeros(1), 8), r"Lambda must be \[H"),
    ],
)
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ----------------------------------------------------------------- discretisation


def test_zoh_matches_matrix_exponential():
    # Van Loan: expm(dt [[A, B], [0, 0]]) = [[Ā, B̄], [0, 1]] for zero-order hold.
    lam, b, _ = diag_params()
    dt = 0.3
    Lb, Bb = s4.discretize_zoh(lam[0], b[0], dt)
    M = np.zeros((N2 + 1, N2 + 1), np.complex64)
    M[:N2, :N2], M[:N2, N2] = np.diag(lam[0]), b[0]
    E = np.asarray(jax.jit(jax.scipy.linalg.expm)(jnp.asarray(dt * M)))
    close(Lb, np.diag(E[:N2, :N2]))
    close(Bb, E[:N2, N2])


def test_bilinear_diag_matches_dense():
    lam, b, _ = diag_params()
    dt = np.exp(LOG_DT)
    Lb, Bb = s4.discretize_bilinear(lam, b, dt[:, None])
    A = np.stack([np.diag(x) for x in lam])
    Ab, Bbd = jax.jit(s4.discretize_bilinear_dense)(A, b, dt)
    close(Ab, np.stack([np.diag(x) for x in np.asarray(Lb)]), 1e-6)
    close(Bbd, Bb, 1e-6)


# ----------------------------------------------------------------- kernels


@pytest.mark.parametrize("disc", ["zoh", "bilinear"])
def test_s4d_kernel_matches_powers(disc):
    lam, b, c = diag_params()
    dt = np.exp(LOG_DT.astype(np.float64))[:, None]
    if disc == "zoh":
        Lb, Bb = np.exp(dt * lam), (np.exp(dt * lam) - 1) / lam * b
    else:
        Lb, Bb = (1 + dt * lam / 2) / (1 - dt * lam / 2), dt / (1 - dt * lam / 2) * b
    ref = np.stack([2 * np.sum(c * Bb * Lb**l, -1).real for l in range(L)])
    close(s4d_kernel(lam, b, c, LOG_DT, L, disc), ref)


def _dense_bilinear_np(A, B, dt):
    eye = np.eye(A.shape[-1])
    M = eye - dt / 2 * A
    return np.linalg.solve(M, eye + dt / 2 * A), np.linalg.solve(M, dt * B)


@pytest.mark.parametrize("length", [L, 15])
def test_s4_dplr_kernel_matches_legs_powers(length):
    """End to end: NPLR + conjugate symmetry + Cauchy/Woodbury + iFFT reproduce the
    kernel C Ā^l B̄ of the real bilinear-discretised HiPPO-LegS system."""
    A, B = map(np.asarray, s4.hippo_legs(N))
    A, B = A.astype(np.float64), B.astype(np.float64)
    Lam, P, Bt, V = (np.asarray(x, np.complex128) for x in s4.nplr_legs(N))
    C = np.random.default_rng(1).standard_normal((H, N))  # real output matrices
    ref = np.zeros((length, H))
    C_tilde = np.zeros((H, N2), np.complex128)
    for h in range(H):
        Ab, Bb = _dense_bilinear_np(A, B, np.exp(LOG_DT[h]))
        powers = [np.linalg.matrix_power(Ab, l) for l in range(length + 1)]
        ref[:, h] = [C[h] @ powers[l] @ Bb for l in range(length)]
        C_tilde[h] = (C[h] @ (np.eye(N) - powers[length]) @ V)[:N2]  # C̃ in the eigenbasis
    half = lambda x: np.broadcast_to(x[:N2], (H, N2))  # noqa: E731
    C_eig = (C @ V)[:, :N2]  # the real C in the eigenbasis: [c, conj c], keep c
    close(s4_c_tilde(half(Lam), half(P), C_eig, LOG_DT, length), C_tilde, 1e-4)
    K = s4_dplr_kernel(half(Lam), half(P), half(Bt), C_tilde, LOG_DT, length)
    close(K, ref, 1e-4)


def test_s4_dplr_kernel_matches_dense_powers_random():
    """Generic (non-HiPPO) DPLR parameters against the implied full complex system."""
    rng = np.random.default_rng(2)
    lam, b, c = diag_params(3)
    p = 0.5 * crandn(rng, H, N2)
    full = lambda x: np.concatenate([x, x.conj()], -1)  # noqa: E731
    ref, C_tilde = np.zeros((L, H)), np.zeros((H, N2), np.complex128)
    for h in range(H):
        Pf = full(p[h])
        A = np.diag(full(lam[h])) - np.outer(Pf, Pf.conj())
        Ab, Bb = _dense_bilinear_np(A, full(b[h]), np.exp(LOG_DT[h]))
        x = Bb
        for l in range(L):
            ref[l, h] = (full(c[h]) @ x).real
            x = Ab @ x
        C_tilde[h] = (full(c[h]) @ (np.eye(N) - np.linalg.matrix_power(Ab, L)))[:N2]
    close(s4_c_tilde(lam, p, c, LOG_DT, L), C_tilde, 1e-4)
    close(s4_dplr_kernel(lam, p, b, C_tilde, LOG_DT, L), ref, 1e-4)


# ----------------------------------------------------------------- recurrence == convolution


def _steps(step, params, u, state):
    """``step(*params, u_t, state)`` over every position of ``u``: all outputs and the last state."""

    def body(state, u_t):
        y, state = step(*params, u_t, state)
        return state, y

    last, ys = jax.lax.scan(body, state, jnp.swapaxes(u, 0, 1))
    return jnp.swapaxes(ys, 0, 1), last


@pytest.mark.parametrize("disc", ["zoh", "bilinear"])
def test_s4d_recurrence_equals_convolution(disc):
    lam, b, c = diag_params()
    u = np.random.default_rng(4).standard_normal((2, L, H)).astype(np.float32)
    y_conv = causal_conv_np(u, np.asarray(s4d_kernel(lam, b, c, LOG_DT, L, disc), np.float64))
    discretize = s4.discretize_zoh if disc == "zoh" else s4.discretize_bilinear
    Lb, Bb = discretize(lam, b, np.exp(LOG_DT)[:, None])
    ys, _ = _steps(s4.diag_ssm_step, (Lb, Bb, c), u, jnp.zeros((2, H, N2), jnp.complex64))
    close(ys, y_conv)


def test_s4_recurrence_equals_convolution():
    lam, b, c = diag_params(5)
    p = 0.5 * crandn(np.random.default_rng(6), H, N2)
    u = np.random.default_rng(7).standard_normal((2, L, H)).astype(np.float32)
    k = s4_dplr_kernel(lam, p, b, c, LOG_DT, L)  # c is C̃ for length L
    y_conv = conv(jnp.asarray(u), k)
    params = s4_dplr_recurrence(lam, p, b, c, LOG_DT, L)
    ys, _ = _steps(s4.dense_ssm_step, params, u, jnp.zeros((2, H, N), jnp.complex64))
    close(ys, y_conv, 1e-4)


@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("length", [1, 13])
def test_convolution_plus_carry_equals_recurrence_from_a_state(dense, length):
    """A piece started from a non-zero state: convolution + carry == stepping (S4D: diagonal,
    S4: dense DPLR recurrence)."""
    lam, b, c = diag_params(9)
    rng = np.random.default_rng(10)
    u = rng.standard_normal((2, length, H)).astype(np.float32)
    state = jnp.asarray(crandn(rng, 2, H, N if dense else N2), jnp.complex64)
    if dense:
        p = 0.5 * crandn(rng, H, N2)
        params = s4_dplr_recurrence(lam, p, b, c, LOG_DT, L)
        kernel = s4_dplr_kernel(lam, p, b, c, LOG_DT, L)[:length]
        step, carry = s4.dense_ssm_step, s4.dense_ssm_carry
    else:
        params = (*s4.discretize_zoh(lam, b, np.exp(LOG_DT)[:, None]), c)
        kernel = s4d_kernel(lam, b, c, LOG_DT, length, "zoh")
        step, carry = s4.diag_ssm_step, s4.diag_ssm_carry
    y_state, final = jax.jit(carry)(*params, u, state)
    ys, last = _steps(step, params, u, state)
    tol = 1e-4 if dense else 1e-5
    close(conv(jnp.asarray(u), kernel) + y_state, ys, tol)
    close(final, last, tol)


def test_carry_bad_arguments():
    lam, b, c = diag_params()
    u = np.zeros((2, 4, H), np.float32)
    with pytest.raises(ValueError, match="state must be"):
        s4.diag_ssm_carry(lam, b, c, u, np.zeros((2, H, N2 + 1), np.complex64))
    with pytest.raises(ValueError, match="u must be a float"):
        s4.diag_ssm_carry(lam, b, c, u.astype(np.int32), np.zeros((2, H, N2), np.complex64))
    with pytest.raises(ValueError, match="u must be"):
        s4.diag_ssm_carry(lam, b, c, u[:, :0], np.zeros((2, H, N2), np.complex64))
    with pytest.raises(ValueError, match="A_bar must be"):
        s4.dense_ssm_carry(np.zeros((H, N)), b, c, u, np.zeros((2, H, N), np.complex64))


# ----------------------------------------------------------------- gradients, length, bf16


def _split(z):
    z = np.asarray(z)
    return jnp.asarray(z.real, jnp.float32), jnp.asarray(z.imag, jnp.float32)


def test_grads_s4d_kernel():
    lam, b, c = diag_params()
    lr, li = _split(lam)
    cr, ci = _split(c)

    def f(lr, li, cr, ci, log_dt):
        return s4d_kernel(lr + 1j * li, b, cr + 1j * ci, log_dt, 8, "zoh")

    args = (lr, li, cr, ci, jnp.asarray(LOG_DT))
    check_grads(jax.jit(f), args, order=1, modes=["rev"], eps=1e-2, atol=2e-3, rtol=2e-3)


def test_grads_s4_dplr_kernel():
    lam, b, c = diag_params()
    p = 0.5 * crandn(np.random.default_rng(8), H, N2)
    lr, li = _split(lam)
    pr, pi = _split(p)

    def f(lr, li, pr, pi, log_dt):
        return s4_dplr_kernel(lr + 1j * li, pr + 1j * pi, b, c, log_dt, 8)

    args = (lr, li, pr, pi, jnp.asarray(LOG_DT))
    check_grads(jax.jit(f), args, order=1, modes=["rev"], eps=1e-2, atol=2e-3, rtol=2e-3)


def test_long_kernels_are_finite():
    n = 65536
    lam, b = s4.s4d_init(8, "lin")
    lam = jnp.broadcast_to(lam, (2, 4))
    c = jnp.ones((2, 4), jnp.complex64)
    log_dt = jnp.log(jnp.array([1e-3, 1e-1]))
    k = s4d_kernel(lam, b, c, log_dt, n, "zoh")
    assert k.shape == (n, 2) and bool(jnp.all(jnp.isfinite(k)))
    assert float(jnp.abs(k[-1, 1])) < 1e-6 < float(jnp.abs(k[:100, 0]).max())  # decays, not zero
    Lam, P, Bt, _ = s4.nplr_legs(8)
    half = lambda x: jnp.broadcast_to(x[:4], (2, 4))  # noqa: E731
    k = s4_dplr_kernel(half(Lam), half(P), half(Bt), c, log_dt, n)
    assert bool(jnp.all(jnp.isfinite(k)))


def test_bf16_input_error_bound():
    """An S4D convolution fed bfloat16 input (computed in float32, returned in bf16).

    Bound: the map u -> K * u is linear, so rounding the input (relative error
    <= 2^-8 per entry for bf16's 8 significant bits) moves each output by at
    most ||K[:, h]||_1 * 2^-8 * max|u|; rounding the output adds <= 2^-8 |y|.
    A 1% slack covers float32 FFT error.
    """
    lam, b, c = diag_params()
    k = s4d_kernel(lam, b, c, LOG_DT, L, "zoh")
    u = jax.random.normal(jax.random.PRNGKey(0), (2, L, H))
    y32 = conv(u, k)
    y16 = conv(u.astype(jnp.bfloat16), k)
    assert y16.dtype == jnp.bfloat16
    err = jnp.abs(y16.astype(jnp.float32) - y32)
    bound = 2.0**-8 * (jnp.abs(k).sum(0) * jnp.abs(u).max() + jnp.abs(y32)) * 1.01 + 1e-6
    assert bool(jnp.all(err <= bound)), float(jnp.max(err / bound))
