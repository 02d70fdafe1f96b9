"""S5: one multi-input multi-output diagonal SSM run with a parallel scan.

Smith, Warrington & Linderman (2023). Where S4 runs ``H`` independent
single-input SSMs through a convolution, S5 runs one SSM with ``P`` states that
reads all ``H`` channels at once, diagonalised so the recurrence is
elementwise and can use an associative scan:

    x_k = Λ̄ ∘ x_{k-1} + B̄ u_k,      y_k = 2 Re(C̃ x_k) + D ∘ u_k.

``Λ`` is initialised from HiPPO-N (the normal part of HiPPO-LegS) in ``J``
diagonal blocks: the block-diagonal matrix ``blockdiag(A_N, ..., A_N)`` has
eigen-decomposition ``V Λ V^*`` with ``V`` block-diagonal and unitary, so the
real-basis ``B`` and ``C`` become ``B̃ = V^* B`` and ``C̃ = C V``.

Conjugate symmetry: the eigenvalues of the real block matrix come in conjugate
pairs; only one of each pair is kept (``P2 = P/2`` states). The dropped states
are the conjugates of the kept ones (for a real input), so they add the complex
conjugate of ``C̃ x``, which is where ``2 Re(.)`` comes from.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax import lax

from sequax.ops.scan import linear_scan
from sequax.ops.segments import check_sequence
from sequax.ops.ssm.s4 import (
    _check_size,
    _hippo_legs_np,
    _nplr_legs_np,
    discretize_bilinear,
    discretize_zoh,
)

_HI = lax.Precision.HIGHEST


def hippo_n(N):
    """HiPPO-N, the normal part of HiPPO-LegS: ``A_N = A_legs + p p^T``, ``p[n] = sqrt(n + 1/2)``.

    ``A_N = -I/2 + S`` with ``S`` skew-symmetric, so it is normal with
    eigenvalues ``-1/2 + i w``.

    Args:
      N: state size (int >= 1).

    Returns:
      ``(A_N, B)``: ``[N, N]`` float32 and the LegS input vector ``[N]`` float32.
    """
    _check_size("N", N, even=False)
    A, B = _hippo_legs_np(N)
    p = np.sqrt(np.arange(N) + 0.5)
    return jnp.asarray(A + np.outer(p, p), jnp.float32), jnp.asarray(B, jnp.float32)


def s5_init(state_size, blocks=1):
    """Block-diagonal HiPPO-N eigen-decomposition, conjugate-symmetric half.

    Each of ``blocks`` diagonal blocks of size ``m = state_size / blocks`` is
    ``A_N`` (:func:`hippo_n`) of size ``m``; per block the ``m/2`` eigenvalues
    with positive imaginary part are kept, with their eigenvectors. So
    ``blockdiag(A_N) = W diag(Λ_full) W^*`` where ``W = [V, conj V]`` (block
    by block) and ``Λ_full = [Λ, conj Λ]``.

    Args:
      state_size: ``P``; ``P / blocks`` must be an even int.
      blocks: ``J >= 1``.

    Returns:
      ``(Lambda [P/2] complex64, V [P, P/2] complex64)``; ``B̃ = V^* B`` maps a real
      ``[P, H]`` input matrix into the eigenbasis and ``C̃ = C V`` a real ``[H, P]``
      output matrix.
    """
    _check_size("blocks", blocks, even=False)
    _check_size("state_size", state_size, even=True)
    if state_size % blocks or (state_size // blocks) % 2:
        raise ValueError(
            f"state_size / blocks must be an even int (each block keeps conjugate pairs); "
            f"got state_size={state_size}, blocks={blocks}"
        )
    m = state_size // blocks
    Lambda, _, _, V = _nplr_legs_np(m)
    lam, v = Lambda[: m // 2], V[:, : m // 2]
    V_big = np.zeros((state_size, state_size // 2), np.complex128)
    for j in range(blocks):
        V_big[j * m : (j + 1) * m, j * (m // 2) : (j + 1) * (m // 2)] = v
    return jnp.asarray(np.tile(lam, blocks), jnp.complex64), jnp.asarray(V_big, jnp.complex64)


def s5_discretize(Lambda, B_tilde, log_dt, discretization="zoh"):
    """Discretise S5 with one step size per state.

    Args:
      Lambda: ``[P2]`` complex eigenvalues (``Re < 0``).
      B_tilde: ``[P2, H]`` complex input matrix in the eigenbasis.
      log_dt: ``[P2]`` log step sizes.
      discretization: ``"zoh"`` (``Λ̄ = exp(dt Λ)``, ``B̄ = (Λ̄-1)/Λ B̃``) or
        ``"bilinear"`` (see :mod:`sequax.ops.ssm.s4`).

    Returns:
      ``(Lambda_bar [P2], B_bar [P2, H])`` complex64.
    """
    Lambda, B_tilde = jnp.asarray(Lambda), jnp.asarray(B_tilde)
    if Lambda.ndim != 1:
        raise ValueError(f"Lambda must be [P2]; got shape {Lambda.shape}")
    if B_tilde.ndim != 2 or B_tilde.shape[0] != Lambda.shape[0]:
        raise ValueError(f"B_tilde must be [P2={Lambda.shape[0]}, H]; got shape {B_tilde.shape}")
    if jnp.shape(log_dt) != Lambda.shape:
        raise ValueError(f"log_dt must be [P2] = {Lambda.shape}; got shape {jnp.shape(log_dt)}")
    dt = jnp.exp(jnp.asarray(log_dt, jnp.float32))[:, None]
    B_tilde = B_tilde.astype(jnp.complex64)
    if discretization == "zoh":
        Lambda_bar, B_bar = discretize_zoh(Lambda[:, None], B_tilde, dt)
    elif discretization == "bilinear":
        Lambda_bar, B_bar = discretize_bilinear(Lambda[:, None], B_tilde, dt)
    else:
        raise ValueError(f"discretization must be 'zoh' or 'bilinear'; got {discretization!r}")
    return Lambda_bar[:, 0], B_bar


def _check_io(Lambda_bar, B_bar, C_tilde, D, H, bidirectional):
    Lambda_bar, B_bar, C_tilde = map(jnp.asarray, (Lambda_bar, B_bar, C_tilde))
    if Lambda_bar.ndim != 1:
        raise ValueError(f"Lambda_bar must be [P2]; got shape {Lambda_bar.shape}")
    P2 = Lambda_bar.shape[0]
    if B_bar.shape != (P2, H):
        raise ValueError(f"B_bar must be [P2, H] = {(P2, H)}; got shape {B_bar.shape}")
    want = (2, H, P2) if bidirectional else (H, P2)
    if C_tilde.shape != want:
        raise ValueError(
            f"C_tilde must be {'[2, H, P2]' if bidirectional else '[H, P2]'} = {want} "
            f"(bidirectional={bidirectional}); got shape {C_tilde.shape}"
        )
    if jnp.shape(D) != (H,):
        raise ValueError(f"D must be [H] = {(H,)}; got shape {jnp.shape(D)}")
    c64 = jnp.complex64
    D = jnp.asarray(D, jnp.float32)
    return Lambda_bar.astype(c64), B_bar.astype(c64), C_tilde.astype(c64), D


def s5_apply(
    Lambda_bar,
    B_bar,
    C_tilde,
    D,
    u,
    *,
    bidirectional=False,
    segment_ids=None,
    initial_state=None,
    return_state=False,
    mode=None,
    chunk_size=None,
    backend="auto",
):
    """Run a discretised S5 SSM over a sequence with :func:`sequax.ops.scan.linear_scan`.

    ``y_k = 2 Re(C̃ x_k) + D ∘ u_k`` with ``x_k = Λ̄ ∘ x_{k-1} + B̄ u_k`` (the 2
    adds the conjugate half of the states, see the module docstring).

    Bidirectional: a second scan runs from the end, ``x'_k = Λ̄ ∘ x'_{k+1} + B̄ u_k``
    (same ``Λ̄``, ``B̄``), read out by its own ``C̃[1]``; the outputs are summed,
    ``y_k = 2 Re(C̃[0] x_k + C̃[1] x'_k) + D ∘ u_k`` (equivalently S5's
    concatenated ``[C1 C2]`` applied to ``[x; x']``).

    Args:
      Lambda_bar: ``[P2]`` complex.
      B_bar: ``[P2, H]`` complex.
      C_tilde: ``[H, P2]`` complex, or ``[2, H, P2]`` when ``bidirectional``.
      D: ``[H]`` real skip weights.
      u: ``[batch, L, H]`` real input (any float dtype; computed in float32).
      bidirectional: add the reverse scan.
      segment_ids: optional ``[batch, L]`` ints; the state restarts at zero
        where the id changes (in both directions), so packed sequences don't
        mix.
      initial_state: optional ``[batch, P2]`` complex state before the first
        position (causal only).
      return_state: also return the final state ``[batch, P2]`` (causal only).
      mode, chunk_size, backend: passed to ``linear_scan`` (its default mode is
        ``"associative"``; the complex scan always takes its pure-JAX path).

    Returns:
      ``y`` ``[batch, L, H]`` in ``u``'s dtype; with ``return_state`` also the
      final state ``[batch, P2]`` complex64.
    """
    u = check_sequence("u", u, 3, layout="[batch, L, H]")
    if bidirectional and (initial_state is not None or return_state):
        raise ValueError(
            "initial_state/return_state need a causal scan; set bidirectional=False to use them"
        )
    Lambda_bar, B_bar, C_tilde, D = _check_io(
        Lambda_bar, B_bar, C_tilde, D, u.shape[2], bidirectional
    )
    uf = u.astype(jnp.float32)
    Bu = jnp.einsum("ph,blh->blp", B_bar, uf.astype(jnp.complex64), precision=_HI)
    a = Lambda_bar[None, None, :]
    scan = dict(segment_ids=segment_ids, mode=mode, chunk_size=chunk_size, backend=backend)
    out = linear_scan(a, Bu, initial_state=initial_state, return_state=return_state, **scan)
    x, final = out if return_state else (out, None)
    C_fwd = C_tilde[0] if bidirectional else C_tilde
    Cx = jnp.einsum("hp,blp->blh", C_fwd, x, precision=_HI)
    if bidirectional:
        x_rev = linear_scan(a, Bu, reverse=True, **scan)
        Cx = Cx + jnp.einsum("hp,blp->blh", C_tilde[1], x_rev, precision=_HI)
    y = (2 * Cx.real + D * uf).astype(u.dtype)
    return (y, final) if return_state else y


def s5_step(Lambda_bar, B_bar, C_tilde, D, u_t, state):
    """One recurrent step of causal S5 (decoding).

    Args:
      Lambda_bar: ``[P2]``; B_bar: ``[P2, H]``; C_tilde: ``[H, P2]``; D: ``[H]``.
      u_t: ``[batch, H]`` real input.
      state: ``[batch, P2]`` complex.

    Returns:
      ``(y_t [batch, H] in u_t's dtype, new_state [batch, P2] complex64)``.
    """
    u_t = jnp.asarray(u_t)
    if u_t.ndim != 2 or not jnp.issubdtype(u_t.dtype, jnp.floating):
        raise ValueError(f"u_t must be a float array [batch, H]; got {u_t.dtype}{list(u_t.shape)}")
    Lambda_bar, B_bar, C_tilde, D = _check_io(Lambda_bar, B_bar, C_tilde, D, u_t.shape[1], False)
    want = (u_t.shape[0], Lambda_bar.shape[0])
    if jnp.shape(state) != want:
        raise ValueError(f"state must be [batch, P2] = {want}; got shape {jnp.shape(state)}")
    uf = u_t.astype(jnp.float32)
    state = Lambda_bar * jnp.asarray(state, jnp.complex64) + jnp.einsum(
        "ph,bh->bp", B_bar, uf.astype(jnp.complex64), precision=_HI
    )
    y = 2 * jnp.einsum("hp,bp->bh", C_tilde, state, precision=_HI).real + D * uf
    return y.astype(u_t.dtype), state


__all__ = ["hippo_n", "s5_apply", "s5_discretize", "s5_init", "s5_step"]
