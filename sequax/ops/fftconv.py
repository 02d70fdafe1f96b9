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
- Kernel parameterisations shared by the long-convolution mixers:
  :func:`multiscale_kernel` (SGConv), :func:`two_sided_kernel`,
  :func:`soft_threshold` and :func:`smooth_kernel` (regularised long convs).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax import lax

from sequax.ops.dispatch import BackendTable

# Backends (sequax.ops.dispatch): "xla" (jnp.fft / lax.conv) and, for the long
# convolution, "pallas" (pallas_kernels.fftconv: FFT as dense DFT matmuls).
FFT_CONV = BackendTable("fft_conv", {"gpu": ("pallas", "xla"), "tpu": ("pallas", "xla")})
CAUSAL_CONV1D = BackendTable("causal_conv1d")


def _check_sequence(name, u):
    if u.ndim != 3:
        raise ValueError(f"{name} must be [batch, length, channels]; got shape {u.shape}")
    if not jnp.issubdtype(u.dtype, jnp.floating):
        raise ValueError(f"{name} must be a floating-point array; got dtype {u.dtype}")


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


def fft_conv(u, k, *, causal=True, bias=None, backend="auto"):
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
      backend: ``"auto"``, ``"xla"`` (``jnp.fft``) or ``"pallas"`` (see
        :mod:`sequax.ops.dispatch`).

    Returns:
      ``[batch, length, channels]`` in ``u``'s dtype. The FFTs run in float32
      (complex64) whatever the input dtype. The FFT size is a power of two
      ``>= length + K' - 1`` (``K'`` the taps that can reach the sequence), so
      the circular convolution never wraps around.
    """
    u, k = jnp.asarray(u), jnp.asarray(k)
    _check_sequence("u", u)
    length, channels = u.shape[1], u.shape[2]
    if length < 1:
        raise ValueError(f"u must have length >= 1; got shape {u.shape}")
    _check_kernel("k", k, channels)
    _check_bias(bias, channels)
    if not causal and k.shape[0] % 2 == 0:
        raise ValueError(
            f"k: a two-sided kernel (causal=False) needs an odd kernel_length so "
            f"k[(K-1)//2] is lag zero; got K={k.shape[0]} (pad one zero tap)"
        )
    return FFT_CONV(backend, dict(u=u, k=k, causal=causal, bias=bias), u, k, causal=causal, bias=bias)


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


def causal_conv1d(u, k, *, segment_ids=None, backend="auto"):
    """Short causal depthwise convolution, computed directly (no FFT).

    ``y[t] = sum_{s=0}^{min(t, K-1)} k[s] u[t-s]`` (same convention as
    :func:`fft_conv`): ``k[0]`` weights the current input.

    Args:
      u: ``[batch, length, channels]``.
      k: ``[kernel_length, channels]``, cast to ``u``'s dtype.
      segment_ids: optional ``[batch, length]`` ints; taps never reach across a
        change of id (packed sequences), as if each segment were zero-padded.
      backend: ``"auto"`` or ``"xla"`` (see :mod:`sequax.ops.dispatch`).

    Returns:
      ``[batch, length, channels]`` in ``u``'s dtype (accumulated in float32).
    """
    u, k = jnp.asarray(u), jnp.asarray(k)
    _check_sequence("u", u)
    _check_kernel("k", k, u.shape[2])
    inputs = dict(u=u, k=k, segment_ids=segment_ids)
    return CAUSAL_CONV1D(backend, inputs, u, k, segment_ids=segment_ids)


def _causal_conv1d_xla(u, k, *, segment_ids):
    """:func:`causal_conv1d` on validated inputs (direct convolution)."""
    channels, taps = u.shape[2], k.shape[0]
    if segment_ids is not None:
        return _segmented_causal_conv1d(u, k, segment_ids)
    # conv_general_dilated correlates: out[t] = sum_j w[j] u[t + j - (K-1)] with
    # left padding K-1, so w is k reversed.
    w = k[::-1, None, :].astype(u.dtype)  # [K, 1, channels] in WIO layout
    y = lax.conv_general_dilated(
        u,
        w,
        window_strides=(1,),
        padding=[(taps - 1, 0)],
        dimension_numbers=("NWC", "WIO", "NWC"),
        feature_group_count=channels,
        precision=lax.Precision.HIGHEST,
        preferred_element_type=jnp.float32,
    )
    return y.astype(u.dtype)


CAUSAL_CONV1D.register("xla", _causal_conv1d_xla)


def _segmented_causal_conv1d(u, k, segment_ids):
    """:func:`causal_conv1d` one tap at a time, dropping taps from another segment."""
    if segment_ids.shape != u.shape[:2]:
        raise ValueError(f"segment_ids must have shape [batch, length]={u.shape[:2]}; got {segment_ids.shape}")
    # Number the maximal runs of equal ids, so an id reused later stays a new segment.
    starts = jnp.concatenate(
        [jnp.ones_like(segment_ids[:, :1], bool), segment_ids[:, 1:] != segment_ids[:, :-1]], axis=1
    )
    run = jnp.cumsum(starts, axis=1)
    length = u.shape[1]
    y = jnp.zeros(u.shape, jnp.float32)
    for lag in range(min(k.shape[0], length)):
        shifted = jnp.pad(u, [(0, 0), (lag, 0), (0, 0)])[:, :length].astype(jnp.float32)
        same = run == jnp.pad(run, [(0, 0), (lag, 0)], constant_values=-1)[:, :length]
        y = y + jnp.where(same[..., None], shifted, 0.0) * k[lag].astype(jnp.float32)
    return y.astype(u.dtype)


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
    if u_t.ndim != 2:
        raise ValueError(f"u_t must be [batch, channels]; got shape {u_t.shape}")
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
    if u_t.ndim != 2:
        raise ValueError(f"u_t must be [batch, channels]; got shape {u_t.shape}")
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
