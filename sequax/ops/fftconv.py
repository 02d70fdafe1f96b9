"""Long and short depthwise convolutions over sequences, as pure functions.

Sequence features are ``[batch, length, channels]`` and every convolution is
depthwise: channel ``c`` of the output only sees channel ``c`` of the input
and its own kernel ``k[:, c]``.

Kernel convention (used by every function here): ``k[s]`` is the weight of the
input ``s`` steps in the past (the *lag*), so a causal convolution is

    y[t] = sum_{s=0}^{min(t, K-1)} k[s] * u[t - s]

which is ``numpy.convolve(u, k)[:length]``. Two-sided kernels are centred: the
middle tap ``k[(K-1)//2]`` is lag zero, taps after it look into the past and
taps before it into the future.

Contents:

- :func:`fft_conv`: long convolution through a zero-padded FFT, O(L log L).
- :func:`causal_conv1d` / :func:`causal_conv1d_step`: short causal convs
  (direct), with a rolling-window decode step.
- :func:`conv_history_step`: decode step for a long causal convolution that
  caches the input history in a ring buffer (O(history) per token).
- Pieces (chunked prefill, sequence shards): both causal convolutions take a
  ``history`` of the inputs before the piece, oldest first;
  :func:`append_history` moves it on, :func:`ring_to_history` /
  :func:`history_to_ring` convert from / to the decode ring buffer.
- Kernel parameterisations shared by the long-convolution mixers:
  :func:`multiscale_kernel` (SGConv), :func:`two_sided_kernel`,
  :func:`soft_threshold` and :func:`smooth_kernel` (regularised long convs).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax import lax

from sequax.ops.dispatch import BackendTable
from sequax.ops.segments import check_segment_ids, check_sequence, segment_runs

# Backends (sequax.ops.dispatch): "xla" (jnp.fft / shifted taps) and, for the long
# convolution, "pallas" (pallas_kernels.fftconv: FFT as dense DFT matmuls).
# auto keeps jnp.fft: the kernel measured 0.6-0.8x cuFFT on an H200 (BENCHMARKS.md) and has not
# run on a TPU; backend="pallas" selects it.
FFT_CONV = BackendTable("fft_conv", {"gpu": ("xla",), "tpu": ("xla",)})
CAUSAL_CONV1D = BackendTable("causal_conv1d")


def _check_sequence(name, u):
    return check_sequence(name, u, 3, layout="[batch, length, channels]")


def _check_history(history, batch, size, channels, what):
    """``history`` ``[batch, size, channels]`` float, or ``ValueError`` naming it."""
    history = jnp.asarray(history)
    want = (batch, size, channels)
    if history.shape != want or not jnp.issubdtype(history.dtype, jnp.floating):
        raise ValueError(
            f"history must be a float array [batch, {what}, channels] = {want} (the inputs before "
            f"u[:, 0], oldest first); got {history.dtype}{list(history.shape)}"
        )
    return history


def append_history(history, u):
    """The last ``H`` inputs of ``[history, u]``: ``[batch, H, channels]`` in ``history``'s dtype.

    ``history`` ``[batch, H, channels]`` holds the inputs before ``u``
    ``[batch, length, channels]``, oldest first.
    """
    size = history.shape[1]
    full = jnp.concatenate([history, u.astype(history.dtype)], axis=1)
    return full[:, full.shape[1] - size :]


def _check_kernel(name, k, channels):
    if k.ndim != 2 or k.shape[1] != channels or k.shape[0] < 1:
        raise ValueError(
            f"{name} must be [kernel_length >= 1, channels={channels}]; got shape {k.shape}"
        )


def _check_bias(bias, channels):
    if bias is not None and jnp.shape(bias) != (channels,):
        raise ValueError(f"bias must be [channels={channels}]; got shape {jnp.shape(bias)}")


def _fft_size(n: int) -> int:
    """Smallest power of two >= n."""
    return 1 << max(n - 1, 0).bit_length()


def fft_conv(u, k, *, causal=True, bias=None, history=None, backend="auto"):
    """Depthwise long convolution of ``u`` with ``k`` via a zero-padded FFT.

    Args:
      u: ``[batch, length, channels]`` floating input.
      k: ``[kernel_length, channels]`` kernel (any length, shorter or longer
        than the sequence).
      causal: ``True``: ``y[t] = sum_{s=0}^{min(t, K-1)} k[s] u[t-s]``.
        ``False``: a centred two-sided kernel. ``kernel_length`` ``K`` must be
        odd, ``c = (K-1)//2`` is lag zero and
        ``y[t] = sum_{j=0}^{K-1} k[j] u[t - (j - c)]`` (out-of-range ``u`` is
        zero), i.e. ``k[c + m]`` weights the input ``m`` steps in the past
        (``m > 0``) or ``-m`` steps in the future (``m < 0``). This equals
        ``numpy.convolve(u, k, mode="same")`` when ``K <= length``, and a
        causal kernel left-padded with ``K-1`` zeros gives the causal result.
      bias: optional ``[channels]`` skip weight: ``bias * u`` is added to the
        output (the "D" term of state-space layers, i.e. extra weight on lag 0).
      history: optional ``[batch, H, channels]`` (causal only), the ``H``
        inputs before ``u[:, 0]``, oldest first: the convolution continues
        them exactly, as if ``[history, u]`` were convolved and the first ``H``
        outputs dropped (taps beyond ``H + t`` see zeros, as at a sequence start).
      backend: ``"auto"``, ``"xla"`` (``jnp.fft``) or ``"pallas"`` (see
        :mod:`sequax.ops.dispatch`).

    Returns:
      ``[batch, length, channels]`` in ``u``'s dtype. The FFTs run in float32
      (complex64) whatever the input dtype. The FFT size is a power of two
      ``>= length + K' - 1`` (``K'`` the taps that can reach the sequence), so
      the circular convolution never wraps around.
    """
    u, k = _check_sequence("u", u), jnp.asarray(k)
    batch, _, channels = u.shape
    _check_kernel("k", k, channels)
    _check_bias(bias, channels)
    if not causal and k.shape[0] % 2 == 0:
        raise ValueError(
            f"k: a two-sided kernel (causal=False) needs an odd kernel_length so "
            f"k[(K-1)//2] is lag zero; got K={k.shape[0]} (pad one zero tap)"
        )
    past = 0
    if history is not None:
        if not causal:
            raise ValueError("history needs causal=True (a two-sided kernel also reads the future)")
        if jnp.ndim(history) == 3:
            past = jnp.shape(history)[1]
        history = _check_history(history, batch, past, channels, "H")
        u = jnp.concatenate([history.astype(u.dtype), u], axis=1)
    y = FFT_CONV(backend, dict(u=u, k=k, causal=causal, bias=bias), u, k, causal=causal, bias=bias)
    return y[:, past:]


def _fft_conv_xla(u, k, *, causal, bias):
    """:func:`fft_conv` through ``jnp.fft`` on validated inputs."""
    length = u.shape[1]
    uf, kf = u.astype(jnp.float32), k.astype(jnp.float32)

    if causal:
        kf = kf[:length]  # lags >= length never meet an input
        offset = 0
    else:
        centre = (k.shape[0] - 1) // 2
        reach = min(centre, length - 1)  # lags |m| >= length never meet an input
        kf = kf[centre - reach : centre + reach + 1]
        offset = reach

    # Linear convolution f[n] = sum_j kf[j] u[n - j] for n < n_fft, exact as long
    # as n_fft >= length + K' - 1 (no circular wrap-around).
    n_fft = _fft_size(length + kf.shape[0] - 1)
    spectrum = jnp.fft.rfft(uf, n=n_fft, axis=1) * jnp.fft.rfft(kf, n=n_fft, axis=0)
    full = jnp.fft.irfft(spectrum, n=n_fft, axis=1)
    # Two-sided: y[t] = f[t + c] = sum_j kf[j] u[t - (j - c)].
    y = full[:, offset : offset + length]
    if bias is not None:
        y = y + jnp.asarray(bias, jnp.float32) * uf
    return y.astype(u.dtype)


FFT_CONV.register("xla", _fft_conv_xla)
FFT_CONV.register("pallas", "pallas_kernels.fftconv:fft_conv", "pallas_kernels.fftconv:why_not")


def causal_conv1d(u, k, *, segment_ids=None, history=None, return_history=False, backend="auto"):
    """Short causal depthwise convolution, computed directly (no FFT).

    ``y[t] = sum_{s=0}^{K-1} k[s] u[t-s]`` (same convention as
    :func:`fft_conv`): ``k[0]`` weights the current input; inputs before the
    piece come from ``history`` (zeros if None, i.e. a sequence start).

    Args:
      u: ``[batch, length, channels]`` float.
      k: ``[kernel_length, channels]``, cast to ``u``'s dtype.
      segment_ids: optional ``[batch, length]`` ints; taps never reach across a
        change of id (packed sequences), as if each segment were zero-padded.
      history: optional ``[batch, K-1, channels]``, the ``K-1`` inputs before
        ``u[:, 0]``, oldest first: the layout of :func:`causal_conv1d_step`'s
        ``conv_state``. It belongs to the piece's first segment.
      return_history: also return the history for the next piece.
      backend: ``"auto"`` or ``"xla"`` (see :mod:`sequax.ops.dispatch`).

    Returns:
      ``y`` ``[batch, length, channels]`` in ``u``'s dtype (accumulated in
      float32); with ``return_history`` also the new history ``[batch, K-1,
      channels]`` (``history``'s dtype, else ``u``'s): the last ``K-1`` inputs
      of ``[history, u]``, those of any segment but the last set to zero.
    """
    u, k = _check_sequence("u", u), jnp.asarray(k)
    batch, length, channels = u.shape
    _check_kernel("k", k, channels)
    if segment_ids is not None:
        segment_ids = check_segment_ids(segment_ids, batch, length)
    if history is None:
        history = jnp.zeros((batch, k.shape[0] - 1, channels), u.dtype)
    history = _check_history(history, batch, k.shape[0] - 1, channels, "K-1")
    # Run ids of [history, u]: the history shares position 0's run.
    runs = None
    if segment_ids is not None:
        runs = jnp.pad(segment_runs(segment_ids), [(0, 0), (k.shape[0] - 1, 0)])
    inputs = dict(u=u, k=k, segment_ids=segment_ids, history=history)
    y = CAUSAL_CONV1D(backend, inputs, u, k, history=history, runs=runs)
    if not return_history:
        return y
    new = append_history(history, u)
    if runs is not None:  # keep only the last segment's inputs
        tail = runs[:, runs.shape[1] - new.shape[1] :]
        new = jnp.where((tail == runs[:, -1:])[..., None], new, jnp.zeros((), new.dtype))
    return y, new


def _causal_conv1d_xla(u, k, *, history, runs):
    """:func:`causal_conv1d` on validated inputs: ``history`` ``[b, K-1, c]``, ``runs``
    ``[b, K-1+L]`` run ids of ``[history, u]`` (None: no segments).

    One shifted multiply-add per tap, which XLA fuses into a single elementwise
    pass (and its gradient into one more pass and a reduction per tap) rather
    than a grouped convolution with one channel per group, which GPU
    convolution libraries serve poorly, its filter gradient above all.
    """
    full = jnp.concatenate([history.astype(u.dtype), u], axis=1)
    accumulate = jnp.promote_types(u.dtype, jnp.float32)
    return _taps(full, k, runs, u.shape[1], accumulate).astype(u.dtype)


CAUSAL_CONV1D.register("xla", _causal_conv1d_xla)


def _taps(full, k, runs, length, dtype):
    """``y[t] = sum_lag k[lag] full[first + t - lag]`` over ``full = [history, u]``, dropping taps
    from another run when ``runs`` is given."""
    first = full.shape[1] - length  # = K-1: where u starts in full
    here = None if runs is None else runs[:, first:]
    y = jnp.zeros((full.shape[0], length, full.shape[2]), dtype)
    for lag in range(k.shape[0]):
        src = slice(first - lag, first - lag + length)
        tap = full[:, src].astype(dtype)
        if here is not None:
            tap = jnp.where((here == runs[:, src])[..., None], tap, 0.0)
        y = y + tap * k[lag].astype(dtype)
    return y


def causal_conv1d_step(u_t, conv_state, k):
    """One decode step of :func:`causal_conv1d`.

    Args:
      u_t: ``[batch, channels]`` current input.
      conv_state: ``[batch, K-1, channels]`` the previous ``K-1`` inputs, oldest
        first (zeros at the start of a sequence, which equals zero padding).
      k: ``[K, channels]``.

    Returns:
      ``(y_t, new_state)``: ``y_t`` ``[batch, channels]`` in ``u_t``'s dtype and
      the state shifted by one with ``u_t`` appended (``conv_state``'s dtype).
    """
    u_t, conv_state, k = jnp.asarray(u_t), jnp.asarray(conv_state), jnp.asarray(k)
    if u_t.ndim != 2 or not jnp.issubdtype(u_t.dtype, jnp.floating):
        raise ValueError(f"u_t must be a float array [batch, channels]; got {u_t.dtype}{list(u_t.shape)}")
    batch, channels = u_t.shape
    _check_kernel("k", k, channels)
    expected = (batch, k.shape[0] - 1, channels)
    if conv_state.shape != expected:
        raise ValueError(
            f"conv_state must be [batch, K-1, channels]={expected}; got shape {conv_state.shape}"
        )
    window = jnp.concatenate([conv_state, u_t[:, None].astype(conv_state.dtype)], axis=1)
    # window[:, j] = u[t - (K-1) + j], whose lag is K-1-j.
    y = jnp.einsum("bkc,kc->bc", window.astype(jnp.float32), k[::-1].astype(jnp.float32))
    return y.astype(u_t.dtype), window[:, 1:]


def conv_history_step(u_t, history, k, index, *, bias=None):
    """One decode step of a long causal convolution from cached inputs.

    ``history`` is a ring buffer of the last ``H`` inputs: the input at time
    ``tau`` lives in slot ``tau % H``. Writing ``u_t`` (time ``index``) and
    contracting every slot with the tap of its lag gives
    ``y_t = sum_{s=0}^{min(index, H-1)} k[s] u[index - s]`` (+ ``bias * u_t``),
    which is :func:`fft_conv` (causal) at position ``index`` as long as
    ``index < H`` or the kernel has at most ``H`` taps (it must). Cost O(H)
    per token.

    Args:
      u_t: ``[batch, channels]`` input at time ``index``.
      history: ``[batch, H, channels]`` ring buffer (zeros initially).
      k: ``[K, channels]`` with ``K <= H``.
      index: scalar int, the number of tokens already seen (``u_t``'s time).
      bias: optional ``[channels]`` skip weight, as in :func:`fft_conv`.

    Returns:
      ``(y_t, new_history)``: ``y_t`` ``[batch, channels]`` in ``u_t``'s dtype
      (computed in float32) and the updated buffer.
    """
    u_t, history, k = jnp.asarray(u_t), jnp.asarray(history), jnp.asarray(k)
    if u_t.ndim != 2 or not jnp.issubdtype(u_t.dtype, jnp.floating):
        raise ValueError(f"u_t must be a float array [batch, channels]; got {u_t.dtype}{list(u_t.shape)}")
    batch, channels = u_t.shape
    if history.ndim != 3 or history.shape[0] != batch or history.shape[2] != channels:
        raise ValueError(
            f"history must be [batch={batch}, H, channels={channels}]; got shape {history.shape}"
        )
    _check_kernel("k", k, channels)
    size = history.shape[1]
    if k.shape[0] > size:
        raise ValueError(
            f"k has {k.shape[0]} taps but history holds only H={size} inputs; "
            "make the history at least as long as the kernel"
        )
    _check_bias(bias, channels)
    index = jnp.asarray(index, jnp.int32)
    history = lax.dynamic_update_slice_in_dim(
        history, u_t[:, None].astype(history.dtype), index % size, axis=1
    )
    # Slot p holds time tau with tau = p (mod H) and index - H < tau <= index,
    # so its lag is (index - p) mod H; never-written slots hold zeros.
    lags = (index - jnp.arange(size)) % size
    taps = jnp.take(jnp.pad(k.astype(jnp.float32), ((0, size - k.shape[0]), (0, 0))), lags, axis=0)
    y = jnp.einsum("bhc,hc->bc", history.astype(jnp.float32), taps)
    if bias is not None:
        y = y + jnp.asarray(bias, jnp.float32) * u_t.astype(jnp.float32)
    return y.astype(u_t.dtype), history


def ring_to_history(ring, index):
    """:func:`conv_history_step`'s ring buffer in time order, oldest first.

    ``ring`` ``[batch, H, channels]`` after ``index`` tokens (scalar int) ->
    ``[batch, H, channels]``: the inputs at times ``index - H .. index - 1``
    (zeros before time 0), ready for :func:`fft_conv`'s ``history``.
    """
    return jnp.roll(ring, -(jnp.asarray(index, jnp.int32) % ring.shape[1]), axis=1)


def history_to_ring(history, index):
    """Inverse of :func:`ring_to_history`: the inputs before time ``index``, oldest first
    ``[batch, H, channels]``, laid out as the ring buffer of :func:`conv_history_step`."""
    return jnp.roll(history, jnp.asarray(index, jnp.int32) % history.shape[1], axis=1)


def _upsample_linear(w, factor: int):
    """Linear interpolation of ``w`` ``[n, channels]`` to ``[n * factor, channels]``.

    Output tap ``j`` sits at input position ``(j + 0.5) / factor - 0.5`` (cell
    centres aligned), clamped to ``[0, n - 1]`` so the ends are held constant.
    """
    n = w.shape[0]
    pos = np.clip((np.arange(n * factor) + 0.5) / factor - 0.5, 0, n - 1)
    lo = np.floor(pos).astype(np.int32)
    hi = np.minimum(lo + 1, n - 1)
    frac = (pos - lo).astype(np.float32)[:, None]
    return w[lo] * (1.0 - frac) + w[hi] * frac


def multiscale_kernel(weights, alpha=0.5):
    """SGConv's multi-scale kernel from ``num_scales`` small sub-kernels.

    Sub-kernel ``i`` (``kernel_dim`` learned taps per channel) is linearly
    interpolated to ``kernel_dim * 2**i`` taps and scaled by ``alpha**i``; the
    pieces are concatenated (coarser scales reach further back), and each
    channel is divided by its L2 norm. The result decays with the lag at a
    rate set by ``alpha`` while the parameter count grows only with
    ``log(length)``.

    Args:
      weights: ``[num_scales, kernel_dim, channels]``.
      alpha: decay per scale, ``0 < alpha <= 1``.

    Returns:
      ``[kernel_dim * (2**num_scales - 1), channels]`` float32, unit L2 norm per
      channel.
    """
    weights = jnp.asarray(weights, jnp.float32)
    if weights.ndim != 3 or min(weights.shape) < 1:
        raise ValueError(
            "weights must be [num_scales, kernel_dim, channels] (all >= 1); "
            f"got shape {weights.shape}"
        )
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha must be in (0, 1]; got {alpha}")
    num_scales, kernel_dim, channels = weights.shape
    pieces = [alpha**i * _upsample_linear(weights[i], 2**i) for i in range(num_scales)]
    kernel = jnp.concatenate(pieces, axis=0)
    norm = jnp.sqrt(jnp.sum(jnp.square(kernel), axis=0) + 1e-12)
    return kernel / norm


def two_sided_kernel(k_fwd, k_bwd):
    """Centred kernel combining a causal kernel and an anti-causal one.

    ``fft_conv(u, two_sided_kernel(k_fwd, k_bwd), causal=False)`` equals
    ``fft_conv(u, k_fwd) + flip(fft_conv(flip(u), k_bwd))`` (flip along the
    length): ``k_fwd[m]`` weights the input ``m`` steps in the past and
    ``k_bwd[m]`` the input ``m`` steps in the future; both lag-0 taps add up.

    Args:
      k_fwd: ``[K, channels]``.
      k_bwd: ``[K, channels]``.

    Returns:
      ``[2K - 1, channels]``, lag zero at index ``K - 1``.
    """
    k_fwd, k_bwd = jnp.asarray(k_fwd), jnp.asarray(k_bwd)
    if k_fwd.ndim != 2 or k_fwd.shape[0] < 1:
        raise ValueError(f"k_fwd must be [K >= 1, channels]; got shape {k_fwd.shape}")
    if k_bwd.shape != k_fwd.shape:
        raise ValueError(f"k_bwd must have k_fwd's shape {k_fwd.shape}; got {k_bwd.shape}")
    return jnp.concatenate([k_bwd[:0:-1], k_fwd[:1] + k_bwd[:1], k_fwd[1:]], axis=0)


def soft_threshold(k, lam):
    """The "squash" regulariser: ``sign(k) * max(|k| - lam, 0)``, elementwise.

    Taps smaller than ``lam`` in magnitude become zero and the rest move
    ``lam`` towards zero, which keeps learned long kernels sparse and smooth.
    ``lam >= 0``; any shape; returns ``k``'s shape and dtype.
    """
    if lam < 0:
        raise ValueError(f"lam must be >= 0; got {lam}")
    k = jnp.asarray(k)
    return jnp.sign(k) * jnp.maximum(jnp.abs(k) - lam, 0.0).astype(k.dtype)


def smooth_kernel(k, width):
    """Centred moving average of a kernel along its first (lag) axis.

    ``out[s] = mean(k[s - r : s + r + 1])`` with ``r = (width - 1) // 2``, the
    mean taken over the taps that exist (so near the ends the window shrinks
    and a constant kernel stays constant).

    Args:
      k: ``[kernel_length, channels]``.
      width: odd window size ``>= 1`` (1 returns ``k``).

    Returns:
      ``[kernel_length, channels]``, ``k``'s dtype.
    """
    k = jnp.asarray(k)
    if k.ndim != 2:
        raise ValueError(f"k must be [kernel_length, channels]; got shape {k.shape}")
    if width < 1 or width % 2 == 0:
        raise ValueError(f"width must be an odd integer >= 1; got {width}")
    if width == 1:
        return k
    length, r = k.shape[0], (width - 1) // 2
    # Window sums from a prefix sum: sum k[lo:hi] = cs[hi] - cs[lo].
    cs = jnp.concatenate([jnp.zeros_like(k[:1]), jnp.cumsum(k, axis=0)], axis=0)
    pos = np.arange(length)
    lo, hi = np.clip(pos - r, 0, length), np.clip(pos + r + 1, 0, length)
    count = (hi - lo)[:, None].astype(np.float32)
    return ((cs[hi] - cs[lo]) / count).astype(k.dtype)
