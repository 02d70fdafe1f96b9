"""S4 and S4D: HiPPO initialisations, discretisation, convolution kernels, recurrences.

Each of ``H`` channels runs its own linear time-invariant SSM with ``N`` states,

    x'(t) = A x(t) + B u(t),    y(t) = C x(t)     (the skip ``D u`` is the caller's),

discretised with a step ``dt`` into ``x_k = Ā x_{k-1} + B̄ u_k``, ``y_k = C x_k``.
Over a sequence that is the causal convolution ``y = K * u`` with the kernel
``K_l = C Ā^l B̄`` (``l = 0 .. L-1``): the *convolution mode* (training) and the
*recurrent mode* (decoding) compute the same thing.

Conjugate symmetry. The systems are real, so in the complex eigenbasis the
eigenvalues (and the entries of B, C, P) come in conjugate pairs. Parameters
hold only one member of each pair (``N/2`` entries, written ``N2`` below); the
other half is implied. For a diagonal system the implied half contributes the
complex conjugate, so ``K_l = 2 Re(sum_{n < N/2} C_n B̄_n Λ̄_n^l)``.

- S4D (diagonal): :func:`s4d_kernel` is a Vandermonde product.
- S4 (DPLR, ``A = diag(Λ) - P P^*``): :func:`s4_dplr_kernel` evaluates the
  kernel's generating function at the roots of unity with Cauchy sums and a
  Woodbury (rank-1) correction, then inverts the FFT.

All math runs in float32 / complex64; the static HiPPO initialisations are
computed in float64 numpy and returned as float32 / complex64 arrays.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

S4D_INITS = ("lin", "inv", "legs", "real")
DISCRETIZATIONS = ("zoh", "bilinear")
_HI = lax.Precision.HIGHEST


# --------------------------------------------------------------------------
# HiPPO initialisations (static: numpy float64, returned as float32/complex64)
# --------------------------------------------------------------------------


def _check_size(name, n, even):
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < (2 if even else 1):
        raise ValueError(f"{name} must be a positive int{' >= 2' if even else ''}; got {n!r}")
    if even and n % 2:
        raise ValueError(
            f"{name} must be even (states come in complex-conjugate pairs); got {n}"
        )


def _hippo_legs_np(N):
    n = np.arange(N, dtype=np.float64)
    r = np.sqrt(2 * n + 1)
    A = -(np.tril(np.outer(r, r), k=-1) + np.diag(n + 1))
    return A, r


def _nplr_legs_np(N):
    A, B = _hippo_legs_np(N)
    P = np.sqrt(np.arange(N) + 0.5)
    # A + P P^T = -I/2 + S with S skew-symmetric: below the diagonal
    # -sqrt((2n+1)(2k+1)) + sqrt((2n+1)(2k+1))/2, above it +sqrt(...)/2, and on
    # it -(n+1) + (n+1/2) = -1/2. So A + P P^T is normal with eigenvalues
    # -1/2 + i w, where i w are the (conjugate-paired) eigenvalues of S.
    S = A + np.outer(P, P) + 0.5 * np.eye(N)
    S = 0.5 * (S - S.T)  # skew-symmetric up to round-off; make it exact
    w, U = np.linalg.eigh(-1j * S)  # -iS is Hermitian: S = i U diag(w) U^*
    pos = np.argsort(w)[N // 2 :]
    if not np.all(w[pos] > 0):
        raise RuntimeError(f"HiPPO-LegS normal part has a zero frequency at N={N}")
    # Pair each eigenvector for +w with its conjugate (the eigenvector for -w),
    # so the second half of every array is the conjugate of the first half.
    V = np.concatenate([U[:, pos], U[:, pos].conj()], axis=1)
    lam = -0.5 + 1j * w[pos]
    Lambda = np.concatenate([lam, lam.conj()])
    return Lambda, V.conj().T @ P, V.conj().T @ B, V


def hippo_legs(N):
    """The HiPPO-LegS matrices of the continuous SSM ``x' = A x + B u``.

    ``A[n, k] = -sqrt((2n+1)(2k+1))`` for ``n > k``, ``-(n+1)`` for ``n == k``,
    ``0`` above the diagonal; ``B[n] = sqrt(2n+1)``.

    Args:
      N: state size (int >= 1).

    Returns:
      ``(A, B)``: ``A`` ``[N, N]`` float32, ``B`` ``[N]`` float32.
    """
    _check_size("N", N, even=False)
    A, B = _hippo_legs_np(N)
    return jnp.asarray(A, jnp.float32), jnp.asarray(B, jnp.float32)


def nplr_legs(N):
    """HiPPO-LegS in normal-plus-low-rank form: ``A = V (diag(Λ) - P P^*) V^*``.

    ``V`` is unitary, ``Λ = -1/2 + i w`` are the eigenvalues of the normal part
    ``A + p p^T`` (``p[n] = sqrt(n + 1/2)``), ``P = V^* p`` and ``B = V^* B_legs``
    (so also ``B_legs = V B``). Entries ``[:N//2]`` have ``Im Λ > 0`` in
    increasing order and entries ``[N//2:]`` are their conjugates in the same
    order (likewise for ``P``, ``B`` and the columns of ``V``); the
    conjugate-symmetric parameters are the first halves.

    Args:
      N: even state size.

    Returns:
      ``(Lambda [N], P [N], B [N], V [N, N])``, all complex64.
    """
    _check_size("N", N, even=True)
    return tuple(jnp.asarray(x, jnp.complex64) for x in _nplr_legs_np(N))


def s4d_init(N, kind="lin"):
    """Diagonal state matrices for S4D (the ``N/2`` conjugate-symmetric half).

    With ``n = 0 .. N/2-1``:

    - ``"lin"`` (S4D-Lin): ``Λ_n = -1/2 + i π n``, ``B = 1``.
    - ``"inv"`` (S4D-Inv): ``Λ_n = -1/2 + i (N/π) (N/(2n+1) - 1)``, ``B = 1``.
    - ``"legs"`` (S4D-LegS): ``Λ`` and ``B`` from :func:`nplr_legs` (the diagonal
      part of the NPLR form, low-rank term dropped).
    - ``"real"`` (S4D-Real): ``Λ_n = -(n+1)``, ``B = 1``.

    Args:
      N: even state size.
      kind: one of ``S4D_INITS``.

    Returns:
      ``(Lambda, B)``, each ``[N//2]`` complex64.
    """
    _check_size("N", N, even=True)
    n = np.arange(N // 2, dtype=np.float64)
    ones = np.ones(N // 2)
    if kind == "lin":
        lam, b = -0.5 + 1j * np.pi * n, ones
    elif kind == "inv":
        lam, b = -0.5 + 1j * (N / np.pi) * (N / (2 * n + 1) - 1), ones
    elif kind == "legs":
        Lambda, _, B, _ = _nplr_legs_np(N)
        lam, b = Lambda[: N // 2], B[: N // 2]
    elif kind == "real":
        lam, b = -(n + 1) + 0j, ones
    else:
        raise ValueError(f"kind must be one of {S4D_INITS}; got {kind!r}")
    return jnp.asarray(lam, jnp.complex64), jnp.asarray(b, jnp.complex64)


# --------------------------------------------------------------------------
# Discretisation
# --------------------------------------------------------------------------


def discretize_zoh(Lambda, B, dt):
    """Zero-order hold for a diagonal system: ``Λ̄ = exp(dt Λ)``, ``B̄ = (Λ̄ - 1)/Λ · B``.

    Args:
      Lambda: diagonal of ``A`` (any shape, complex; ``Λ != 0``).
      B: input weights, broadcastable with ``Lambda`` (e.g. ``[H, N2]``, or
        ``[N2, H]`` against ``Lambda[:, None]``).
      dt: step sizes (> 0), broadcastable with ``Lambda``.

    Returns:
      ``(Lambda_bar, B_bar)`` complex64, shaped ``Lambda * dt`` and
      ``Lambda * dt * B`` broadcast.
    """
    Lambda = jnp.asarray(Lambda, jnp.complex64)
    Lambda_bar = jnp.exp(Lambda * dt)
    return Lambda_bar, (Lambda_bar - 1.0) / Lambda * B


def discretize_bilinear(Lambda, B, dt):
    """Bilinear (Tustin) rule for a diagonal system.

    ``Λ̄ = (1 + dt Λ/2) / (1 - dt Λ/2)``, ``B̄ = dt / (1 - dt Λ/2) · B``.
    Shapes as in :func:`discretize_zoh`.
    """
    Lambda = jnp.asarray(Lambda, jnp.complex64)
    half = Lambda * dt / 2
    return (1.0 + half) / (1.0 - half), dt / (1.0 - half) * B


def discretize_bilinear_dense(A, B, dt):
    """Bilinear rule for a dense system: ``Ā = (I - dt/2 A)^{-1} (I + dt/2 A)``,
    ``B̄ = (I - dt/2 A)^{-1} dt B``.

    Args:
      A: ``[..., N, N]`` (real or complex).
      B: ``[..., N]``.
      dt: scalar or ``[...]`` (the leading dims of ``A``).

    Returns:
      ``(A_bar [..., N, N], B_bar [..., N])`` in the common (at least float32) dtype.
    """
    A, B = jnp.asarray(A), jnp.asarray(B)
    if A.ndim < 2 or A.shape[-1] != A.shape[-2]:
        raise ValueError(f"A must be [..., N, N]; got shape {A.shape}")
    if B.shape != A.shape[:-1]:
        raise ValueError(f"B must be [..., N] = {A.shape[:-1]}; got shape {B.shape}")
    dtype = jnp.result_type(A, B, jnp.float32)
    A, B = A.astype(dtype), B.astype(dtype)
    dt = jnp.asarray(dt, jnp.float32)[..., None, None]
    eye = jnp.eye(A.shape[-1], dtype=dtype)
    M = eye - dt / 2 * A
    A_bar = jnp.linalg.solve(M, eye + dt / 2 * A)
    B_bar = jnp.linalg.solve(M, (dt[..., 0] * B)[..., None])[..., 0]
    return A_bar, B_bar


def _discretize(Lambda, B, dt, discretization):
    if discretization == "zoh":
        return discretize_zoh(Lambda, B, dt)
    if discretization == "bilinear":
        return discretize_bilinear(Lambda, B, dt)
    raise ValueError(f"discretization must be one of {DISCRETIZATIONS}; got {discretization!r}")


# --------------------------------------------------------------------------
# Convolution kernels
# --------------------------------------------------------------------------


def _check_channels(Lambda, log_dt, **others):
    """Lambda ``[H, N2]``; ``others`` broadcastable to it; ``log_dt`` ``[H]`` (or None)."""
    Lambda = jnp.asarray(Lambda)
    if Lambda.ndim != 2:
        raise ValueError(f"Lambda must be [H, N2] (channels, states); got shape {Lambda.shape}")
    out = [Lambda.astype(jnp.complex64)]
    for name, x in others.items():
        x = jnp.asarray(x)
        try:
            ok = jnp.broadcast_shapes(x.shape, Lambda.shape) == Lambda.shape
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(
                f"{name} must broadcast to Lambda's shape {Lambda.shape}; got {x.shape}"
            )
        out.append(jnp.broadcast_to(x.astype(jnp.complex64), Lambda.shape))
    if log_dt is None:
        return out, None
    log_dt = jnp.asarray(log_dt, jnp.float32)
    if log_dt.shape != Lambda.shape[:1]:
        raise ValueError(f"log_dt must be [H] = {Lambda.shape[:1]}; got shape {log_dt.shape}")
    return out, log_dt


def _check_length(L):
    if isinstance(L, bool) or not isinstance(L, (int, np.integer)) or L < 1:
        raise ValueError(f"L (kernel length) must be a positive int; got {L!r}")


def s4d_kernel(Lambda, B, C, log_dt, L, discretization="zoh"):
    """S4D convolution kernel ``K_l = 2 Re(sum_n C_n B̄_n Λ̄_n^l)``, a Vandermonde product.

    The factor 2 with the real part adds the implied conjugate half of the
    states (see the module docstring). The powers are ``exp(l log Λ̄)``
    (``log Λ̄ = dt Λ`` exactly for ZOH), so long kernels decay to zero instead
    of accumulating round-off. Memory is ``O(H N2 L)``.

    Args:
      Lambda: ``[H, N2]`` complex diagonal of ``A`` (``Re < 0``).
      B: ``[H, N2]`` complex (or broadcastable, e.g. ``[N2]``).
      C: ``[H, N2]`` complex (or broadcastable).
      log_dt: ``[H]`` log step sizes.
      L: kernel length (int >= 1).
      discretization: ``"zoh"`` or ``"bilinear"``.

    Returns:
      ``[L, H]`` float32 kernel (``k[s]`` weights the input ``s`` steps back).
    """
    (Lambda, B, C), log_dt = _check_channels(Lambda, log_dt, B=B, C=C)
    _check_length(L)
    dt = jnp.exp(log_dt)[:, None]
    Lambda_bar, B_bar = _discretize(Lambda, B, dt, discretization)
    log_Lambda_bar = Lambda * dt if discretization == "zoh" else jnp.log(Lambda_bar)
    powers = jnp.exp(log_Lambda_bar[..., None] * jnp.arange(L, dtype=jnp.float32))
    return 2 * jnp.einsum("hn,hnl->lh", C * B_bar, powers, precision=_HI).real


def s4_dplr_kernel(Lambda, P, B, C, log_dt, L):
    """S4 convolution kernel of the DPLR system ``A = diag(Λ) - P P^*`` (bilinear).

    The kernel's generating function ``K̂(z) = sum_{l<L} K_l z^l`` at the roots
    of unity ``z_j = exp(-2πi j/L)`` is its FFT. Since ``z_j^L = 1``,

        K̂(z) = C (I - Ā^L) (I - Ā z)^{-1} B̄ = C̃ (I - Ā z)^{-1} B̄,

    and ``C`` here *is* that ``C̃ = C (I - Ā^L)`` (the S4 convention: ``C̃`` is
    the trained parameter; :func:`s4_c_tilde` maps a true ``C`` to it and
    :func:`s4_dplr_recurrence` back). With ``Ā = (I - dt/2 A)^{-1}(I + dt/2 A)``
    and ``B̄ = (I - dt/2 A)^{-1} dt B``,

        K̂(z) = dt C̃ M(z)^{-1} B,   M(z) = (1 - z) I - u A,   u = dt (1 + z)/2.

    ``M = diag(d) + u P P^*`` with ``d_n = (1 - z) - u Λ_n``, so Woodbury gives

        K̂ = dt (k_CB - u k_CP k_PB / (1 + u k_PP)),   k_XY = sum_n X_n Y_n / d_n,

    Cauchy sums over all ``N`` states (each pair's conjugate term is added
    explicitly; ``k_PB`` uses ``conj(P)``). ``d_n`` never vanishes on the unit
    circle when ``Re Λ < 0``, and at ``z = -1`` it stays finite (``u = 0``).
    Only ``z_j`` for ``j <= L/2`` are needed: ``K`` is real, so ``irfft``.
    Memory is ``O(H N2 L)``.

    Args:
      Lambda: ``[H, N2]`` complex (``Re < 0``).
      P: ``[H, N2]`` complex low-rank term (or broadcastable).
      B: ``[H, N2]`` complex (or broadcastable).
      C: ``[H, N2]`` complex, the transformed ``C̃`` for length ``L``.
      log_dt: ``[H]``.
      L: kernel length (int >= 1).

    Returns:
      ``[L, H]`` float32 kernel ``K_l = C Ā^l B̄`` of the implied real ``N``-state system.
    """
    (Lambda, P, B, C), log_dt = _check_channels(Lambda, log_dt, P=P, B=B, C=C)
    _check_length(L)
    dt = jnp.exp(log_dt)[:, None]  # [H, 1]
    j = np.arange(L // 2 + 1)
    z = jnp.asarray(np.exp(-2j * np.pi * j / L), jnp.complex64)  # [J]
    u = dt * (1 + z) / 2  # [H, J]
    d = (1 - z) - u[:, None, :] * Lambda[..., None]  # [H, N2, J]
    d_conj = (1 - z) - u[:, None, :] * jnp.conj(Lambda)[..., None]

    def cauchy(v):  # sum over the N2 states and their conjugates -> [H, J]
        return jnp.sum(v[..., None] / d + jnp.conj(v)[..., None] / d_conj, axis=1)

    Pc = jnp.conj(P)
    k_cb, k_cp, k_pb, k_pp = cauchy(C * B), cauchy(C * P), cauchy(Pc * B), cauchy(Pc * P)
    K_hat = dt * (k_cb - u * k_cp * k_pb / (1 + u * k_pp))
    return jnp.fft.irfft(K_hat, n=L, axis=-1).T


# --------------------------------------------------------------------------
# Recurrent form
# --------------------------------------------------------------------------


def dplr_dense(Lambda, P, B, C):
    """The full ``N``-state complex system that conjugate-symmetric DPLR parameters stand for.

    ``Λ_full = [Λ, conj Λ]`` (likewise ``P``, ``B``, ``C``), ``A = diag(Λ_full) -
    P_full P_full^*``. Its outputs ``C A^l B`` are real.

    Args:
      Lambda, P, B, C: ``[H, N2]`` complex (``P``, ``B``, ``C`` may broadcast).

    Returns:
      ``(A [H, N, N], B [H, N], C [H, N])`` complex64 with ``N = 2 N2``.
    """
    (Lambda, P, B, C), _ = _check_channels(Lambda, None, P=P, B=B, C=C)
    full = lambda x: jnp.concatenate([x, jnp.conj(x)], axis=-1)  # noqa: E731
    Lf, Pf = full(Lambda), full(P)
    diag = jnp.vectorize(jnp.diag, signature="(n)->(n,n)")
    A = diag(Lf) - Pf[:, :, None] * jnp.conj(Pf)[:, None, :]
    return A, full(B), full(C)


def s4_c_tilde(Lambda, P, C, log_dt, L):
    """The S4 output parameter ``C̃ = C (I - Ā^L)`` for a true output matrix ``C``.

    ``Ā`` is the bilinear discretisation of the full DPLR system
    (:func:`dplr_dense`). Feeding the result to :func:`s4_dplr_kernel` gives
    ``K_l = C Ā^l B̄`` for ``l < L``.

    Args:
      Lambda, P, C: ``[H, N2]`` complex; log_dt: ``[H]``; L: int >= 1.

    Returns:
      ``[H, N2]`` complex64 (the first half of the conjugate-paired ``C̃``).
    """
    _check_length(L)
    (Lambda, P, C), log_dt = _check_channels(Lambda, log_dt, P=P, C=C)
    A, _, Cf = dplr_dense(Lambda, P, jnp.zeros_like(Lambda), C)
    A_bar, _ = discretize_bilinear_dense(A, jnp.zeros(A.shape[:-1], A.dtype), jnp.exp(log_dt))
    eye = jnp.eye(A.shape[-1], dtype=A.dtype)
    Ct = jnp.einsum("hn,hnm->hm", Cf, eye - jnp.linalg.matrix_power(A_bar, L), precision=_HI)
    return Ct[:, : Lambda.shape[1]]


def s4_dplr_recurrence(Lambda, P, B, C, log_dt, L):
    """Dense recurrent form of S4: ``(Ā, B̄, C_true)`` for :func:`dense_ssm_step`.

    ``Ā, B̄`` are the bilinear discretisation of the full DPLR system
    (:func:`dplr_dense`) and ``C_true = C̃ (I - Ā^L)^{-1}`` undoes the ``C̃``
    convention of :func:`s4_dplr_kernel` for kernel length ``L``, so stepping
    reproduces that kernel's convolution over the first ``L`` positions.
    Cost ``O(H N^3 log L)``.

    Args:
      Lambda, P, B, C (= ``C̃``): ``[H, N2]`` complex; log_dt: ``[H]``; L: the
        kernel length ``C̃`` refers to.

    Returns:
      ``(A_bar [H, N, N], B_bar [H, N], C [H, N])`` complex64, ``N = 2 N2``.
    """
    _check_length(L)
    (Lambda, P, B, C), log_dt = _check_channels(Lambda, log_dt, P=P, B=B, C=C)
    A, Bf, Ct = dplr_dense(Lambda, P, B, C)
    A_bar, B_bar = discretize_bilinear_dense(A, Bf, jnp.exp(log_dt))
    eye = jnp.eye(A.shape[-1], dtype=A.dtype)
    # C_true (I - Ā^L) = C̃  <=>  (I - Ā^L)^T C_true^T = C̃^T.
    M = jnp.swapaxes(eye - jnp.linalg.matrix_power(A_bar, L), -1, -2)
    C_true = jnp.linalg.solve(M, Ct[..., None])[..., 0]
    return A_bar, B_bar, C_true


def _check_step(state, u_t, shape):
    u_t, state = jnp.asarray(u_t), jnp.asarray(state)
    if u_t.ndim != 2 or u_t.shape[1] != shape[0]:
        raise ValueError(f"u_t must be [batch, H={shape[0]}]; got shape {u_t.shape}")
    if state.shape != u_t.shape[:1] + tuple(shape):
        want = u_t.shape[:1] + tuple(shape)
        dims = ", ".join(map(str, shape))
        raise ValueError(f"state must be [batch, {dims}] = {want}; got shape {state.shape}")
    return u_t.astype(jnp.float32), state.astype(jnp.complex64)


def diag_ssm_step(Lambda_bar, B_bar, C, u_t, state):
    """One step of a discretised diagonal (S4D) SSM with conjugate symmetry.

    ``x <- Λ̄ x + B̄ u_t``, ``y = 2 Re(sum_n C_n x_n)``.

    Args:
      Lambda_bar, B_bar, C: ``[H, N2]`` complex (from :func:`discretize_zoh` /
        :func:`discretize_bilinear`).
      u_t: ``[batch, H]`` real input.
      state: ``[batch, H, N2]`` complex.

    Returns:
      ``(y_t [batch, H] float32, new_state [batch, H, N2] complex64)``.
    """
    Lambda_bar = jnp.asarray(Lambda_bar)
    u_t, state = _check_step(state, u_t, Lambda_bar.shape)
    state = Lambda_bar * state + B_bar * u_t[..., None]
    return 2 * jnp.sum(C * state, axis=-1).real, state


def dense_ssm_step(A_bar, B_bar, C, u_t, state):
    """One step of a dense discretised SSM: ``x <- Ā x + B̄ u_t``, ``y = Re(C x)``.

    Used for S4 with the outputs of :func:`s4_dplr_recurrence` (all ``N``
    states kept, so no factor 2).

    Args:
      A_bar: ``[H, N, N]``; B_bar, C: ``[H, N]``.
      u_t: ``[batch, H]`` real input.
      state: ``[batch, H, N]`` complex.

    Returns:
      ``(y_t [batch, H] float32, new_state [batch, H, N] complex64)``.
    """
    A_bar = jnp.asarray(A_bar)
    if A_bar.ndim != 3 or A_bar.shape[1] != A_bar.shape[2]:
        raise ValueError(f"A_bar must be [H, N, N]; got shape {A_bar.shape}")
    u_t, state = _check_step(state, u_t, A_bar.shape[:2])
    state = jnp.einsum("hnm,bhm->bhn", A_bar, state, precision=_HI) + B_bar * u_t[..., None]
    return jnp.sum(C * state, axis=-1).real, state


def _check_carry(u, state, shape):
    u, state = jnp.asarray(u), jnp.asarray(state)
    if u.ndim != 3 or u.shape[2] != shape[0] or min(u.shape[:2]) < 1:
        raise ValueError(f"u must be [batch >= 1, L >= 1, H={shape[0]}]; got shape {u.shape}")
    if not jnp.issubdtype(u.dtype, jnp.floating):
        raise ValueError(f"u must be a float array (cast it to float32); got dtype {u.dtype}")
    want = u.shape[:1] + tuple(shape)
    if state.shape != want:
        raise ValueError(f"state must be [batch, {', '.join(map(str, shape))}] = {want}; got {state.shape}")
    return u.astype(jnp.float32).astype(jnp.complex64), state.astype(jnp.complex64)


def diag_ssm_carry(Lambda_bar, B_bar, C, u, state):
    """What an incoming state adds to a diagonal SSM's convolution over a piece, and the state after it.

    The convolution mode (``fft_conv`` with :func:`s4d_kernel`) starts from a
    zero state. Starting from ``x_{-1} = state`` instead adds
    ``2 Re(sum_n C_n Λ̄_n^(t+1) state_n)`` to output ``t``, and the state after
    the piece is ``Λ̄^L state + sum_s Λ̄^(L-1-s) B̄ u_s`` (the same recurrence as
    :func:`diag_ssm_step`). Powers are ``exp(l log Λ̄)``; memory ``O(H N2 L)``.

    Args:
      Lambda_bar, B_bar, C: ``[H, N2]`` complex, as for :func:`diag_ssm_step`.
      u: ``[batch, L, H]`` real input of the piece.
      state: ``[batch, H, N2]`` complex, the state before ``u[:, 0]``.

    Returns:
      ``(y_state [batch, L, H] float32, final [batch, H, N2] complex64)``.
    """
    Lambda_bar = jnp.asarray(Lambda_bar, jnp.complex64)
    u, state = _check_carry(u, state, Lambda_bar.shape)
    L = u.shape[1]
    powers = jnp.exp(jnp.log(Lambda_bar)[..., None] * jnp.arange(L + 1, dtype=jnp.float32))  # [H, N2, L+1]
    y = 2 * jnp.einsum("hn,hnl,bhn->blh", C, powers[..., 1:], state, precision=_HI).real
    final = powers[..., L] * state + jnp.einsum(
        "hnl,hn,blh->bhn", jnp.flip(powers[..., :L], -1), B_bar, u, precision=_HI
    )
    return y, final


def _orbit(A, v, length, left=False):
    """``[length, H, N]``: ``A^l v`` (``left``: ``v A^l``) for ``l < length``, ``A`` ``[H, N, N]``,
    ``v`` ``[H, N]``; ``log2(length)`` doublings ``seq[m:2m] = A^m seq[:m]``."""
    seq, power = v[None], A
    while seq.shape[0] < length:
        if left:
            nxt = jnp.einsum("lhn,hnm->lhm", seq, power, precision=_HI)
        else:
            nxt = jnp.einsum("hnm,lhm->lhn", power, seq, precision=_HI)
        seq = jnp.concatenate([seq, nxt], axis=0)
        power = jnp.einsum("hnm,hmk->hnk", power, power, precision=_HI)
    return seq[:length]


def dense_ssm_carry(A_bar, B_bar, C, u, state):
    """:func:`diag_ssm_carry` for a dense SSM (S4's recurrent form, :func:`dense_ssm_step`).

    Output ``t`` gains ``Re(C Ā^(t+1) state)``; the state after the piece is
    ``Ā^L state + sum_s Ā^(L-1-s) B̄ u_s``. The sequences ``C Ā^(t+1)`` and
    ``Ā^l B̄`` come from ``log2 L`` matrix doublings; memory ``O(H N L)``.

    Args:
      A_bar: ``[H, N, N]``; B_bar, C: ``[H, N]`` (from :func:`s4_dplr_recurrence`).
      u: ``[batch, L, H]`` real input.
      state: ``[batch, H, N]`` complex.

    Returns:
      ``(y_state [batch, L, H] float32, final [batch, H, N] complex64)``.
    """
    A_bar = jnp.asarray(A_bar, jnp.complex64)
    if A_bar.ndim != 3 or A_bar.shape[1] != A_bar.shape[2]:
        raise ValueError(f"A_bar must be [H, N, N]; got shape {A_bar.shape}")
    u, state = _check_carry(u, state, A_bar.shape[:2])
    B_bar, C = jnp.asarray(B_bar, jnp.complex64), jnp.asarray(C, jnp.complex64)
    L = u.shape[1]
    readout = _orbit(A_bar, jnp.einsum("hn,hnm->hm", C, A_bar, precision=_HI), L, left=True)  # C Ā^(t+1)
    y = jnp.einsum("lhn,bhn->blh", readout, state, precision=_HI).real
    inputs = _orbit(A_bar, B_bar, L)  # Ā^l B̄
    final = jnp.einsum("hnm,bhm->bhn", jnp.linalg.matrix_power(A_bar, L), state, precision=_HI)
    final = final + jnp.einsum("lhn,blh->bhn", inputs[::-1], u, precision=_HI)
    return y, final


def log_dt_init(key, shape, dt_min=1e-3, dt_max=1e-1):
    """``log dt`` uniform in ``[log dt_min, log dt_max]`` (float32, any ``shape``)."""
    if not 0 < dt_min <= dt_max:
        raise ValueError(f"need 0 < dt_min <= dt_max; got dt_min={dt_min}, dt_max={dt_max}")
    return jax.random.uniform(
        key, shape, jnp.float32, minval=math.log(dt_min), maxval=math.log(dt_max)
    )


__all__ = [
    "DISCRETIZATIONS",
    "S4D_INITS",
    "dense_ssm_carry",
    "dense_ssm_step",
    "diag_ssm_carry",
    "diag_ssm_step",
    "discretize_bilinear",
    "discretize_bilinear_dense",
    "discretize_zoh",
    "dplr_dense",
    "hippo_legs",
    "log_dt_init",
    "nplr_legs",
    "s4_c_tilde",
    "s4_dplr_kernel",
    "s4_dplr_recurrence",
    "s4d_init",
    "s4d_kernel",
]
