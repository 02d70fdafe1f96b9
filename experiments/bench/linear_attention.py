"""Linear-attention benchmark cases: the Pallas kernels (``backend="pallas"``) beside the pure-JAX
chunked path and flash-linear-attention (a PyTorch peer in its own process), plus one GLA and one
DeltaNet layer up to 1M tokens.

One JSON line per case (``experiments.bench.common``); every ratio is taken against an anchor
measured in the same run. ``python -m experiments.bench.linear_attention [--quick | --sweep |
--stages]`` (``--stages``: each kernel launch of GLA, retention and the delta rule timed alone, to see where
the vector gates' and the delta rule's time goes).

Ops and their fla peers: ``gla`` (``chunk_gla``), ``retention`` (``chunk_simple_gla``),
``linear_attention`` (``chunk_linear_attn``, ``normalize=False``), ``delta_rule``
(``chunk_delta_rule``). bf16 q, k, v; GLA's gate float32 ``log_sigmoid(.) / 16``; retention
RetNet's per-head decays; DeltaNet L2-normalised q, k and ``beta = sigmoid(.)`` in bf16.

Figures of merit, per token and head at head dim D = 128, chunk C = 64 (B2 T16384 H16: 524,288
token-heads; B8 T2048 H16: 262,144):
- FLOPs of the chunked algorithm (the usual count; forward + backward taken as 3x forward): gated
  forward 2 C D (Q K^T) + 2 C D (A V) + 2 D^2 (Q h) + 2 D^2 (K^T V) = 98,304 -> 51.5 / 25.8
  GFLOP, forward + backward 155 / 77 GFLOP. Delta rule forward 176,128 (K K^T, U, W, W h, K^T D,
  Q K^T, P D, Q h) -> 92 / 46 GFLOP. The H200 bf16 matmul ceiling is ~790 TFLOP/s; these
  kernels are latency- and exp-bound long before that (GLA's vector gates cost ~20 D
  exponentials per token and head forward, ~50 D backward).
- Minimal HBM traffic: forward reads q, k, v (+ g) and writes o: 1,024 B (+ 512 B GLA's f32 gate,
  + 2 B DeltaNet's beta) -> GLA 805 MB, retention / linear attention 537 MB, DeltaNet 538 MB at
  B2 T16384 (0.19 / 0.12 ms at ~4.3 TB/s); forward + backward also reads dO and writes dq, dk, dv
  (+ dg): GLA 3,072 B -> 1.61 GB.
The per-chunk states the chunked algorithm writes once (D^2 / C bf16 values per token and head,
512 B) are not in the minimal figure.

Targets (issue 10, H200): every kernel forward + backward >= 1.0x its fla counterpart
(``fwd_bwd_speedup_vs_fla``); one GLA and one DeltaNet layer (d_model 1024, B1) forward + backward
at 1M tokens (out of memory is reported as a result).
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np

from experiments.bench.common import emit, fwd_bwd, layer_fwd_bwd, run_case, run_peer, temp_bytes, time_ms
from sequax.ops import linear_attention as la

SHAPES = ((2, 16384, 16, 128), (8, 2048, 16, 128))  # batch, time, heads, head dim
CHUNK = 64
OPS = ("gla", "retention", "linear_attention", "delta_rule")
PEER_OF = {"gla": "gla", "retention": "simple_gla", "linear_attention": "linear_attn", "delta_rule": "delta_rule"}
LAYER_LENGTHS = (16384, 131072, 1048576)
PEER_TIMEOUT_S = 1200
HBM_BYTES_PER_S = 4.3e12
FWD_FLOPS = {"gla": 98304, "retention": 98304, "linear_attention": 98304, "delta_rule": 176128}
FLOPS_PER_TOKEN_HEAD = {"fwd": FWD_FLOPS, "fwd_bwd": {op: 3 * f for op, f in FWD_FLOPS.items()}}  # D 128, C 64
BYTES_PER_TOKEN_HEAD = {  # minimal traffic at D = 128 (module docstring)
    "fwd": {"gla": 1536, "retention": 1024, "linear_attention": 1024, "delta_rule": 1026},
    "fwd_bwd": {"gla": 3072, "retention": 2048, "linear_attention": 2048, "delta_rule": 2052},
}


def _inputs(op, batch, time, heads, dim, seed=0):
    keys = jax.random.split(jax.random.PRNGKey(seed), 4)
    q, k, v = (jax.random.normal(key, (batch, time, heads, dim), jnp.float32) for key in keys[:3])
    if op == "delta_rule":
        q, k = (x / jnp.linalg.norm(x, axis=-1, keepdims=True) for x in (q, k))
        beta = jax.nn.sigmoid(jax.random.normal(keys[3], (batch, time, heads))).astype(jnp.bfloat16)
        return tuple(x.astype(jnp.bfloat16) for x in (q, k, v)) + (beta,)
    q, k, v = (x.astype(jnp.bfloat16) for x in (q, k, v))
    if op == "gla":
        return q, k, v, jax.nn.log_sigmoid(jax.random.normal(keys[3], (batch, time, heads, dim))) / 16
    if op == "retention":
        return q, k, v, la.retnet_log_decays(heads)
    return q, k, v


def _op(op, backend, mode):
    fn = getattr(la, op)

    def f(*args):
        return fn(*args, backend=backend, mode=mode, chunk_size=CHUNK)

    return f


def _measure(f, args, iters=10):
    fwd, both = fwd_bwd(f, tuple(range(len(args))))
    return dict(fwd_ms=time_ms(fwd, *args, iters=iters), fwd_bwd_ms=time_ms(both, *args, iters=iters),
                fwd_temp_bytes=temp_bytes(fwd, *args), fwd_bwd_temp_bytes=temp_bytes(both, *args))


def _max_diffs(args, op):
    """Largest |pallas - xla| of the output and of each gradient, relative to max |xla| (a GPU check)."""
    out = {}
    pallas, xla = jax.jit(_op(op, "pallas", None)), jax.jit(_op(op, "xla", "chunked"))
    a, b = (np.asarray(f(*args), np.float32) for f in (pallas, xla))
    out["o_rel_diff_vs_xla"] = float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-30))
    _, gp = fwd_bwd(_op(op, "pallas", None), tuple(range(len(args))))
    _, gx = fwd_bwd(_op(op, "xla", "chunked"), tuple(range(len(args))))
    for i, (a, b) in enumerate(zip(gp(*args)[1], gx(*args)[1])):
        a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
        out[f"grad{i}_rel_diff_vs_xla"] = float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-30))
    return out


def _figures(op, shape, r):
    token_heads = shape[0] * shape[1] * shape[2]
    for k in ("fwd", "fwd_bwd"):
        r[f"{k}_tflops"] = FLOPS_PER_TOKEN_HEAD[k][op] * token_heads / r[f"{k}_ms"] / 1e9
        r[f"{k}_gbps"] = BYTES_PER_TOKEN_HEAD[k][op] * token_heads / r[f"{k}_ms"] / 1e6
        r[f"{k}_hbm_fraction"] = r[f"{k}_gbps"] * 1e9 / HBM_BYTES_PER_S
    return r


def _op_cases(shape, ops, peer_ops):
    info = dict(shape=dict(zip("BTHD", shape)), dtype="bfloat16", chunk=CHUNK)
    results = {}
    for op in ops:
        args = _inputs(op, *shape)
        results[op] = {}
        for path, (backend, mode) in (("xla", ("xla", "chunked")), ("pallas", ("pallas", None))):
            def measure(op=op, path=path, backend=backend, mode=mode):
                r = _figures(op, shape, _measure(_op(op, backend, mode), args))
                if path == "pallas":
                    r.update(_max_diffs(args, op))
                    if "xla" in results[op]:
                        for k in ("fwd_ms", "fwd_bwd_ms"):
                            r[f"{k[:-3]}_speedup_vs_xla"] = results[op]["xla"][k] / r[k]
                results[op][path] = r
                return r

            run_case(f"{op}/{path}", measure, **info)
    if not peer_ops:
        return
    lines = _peer(shape, [PEER_OF[op] for op in peer_ops])
    for line in lines:
        emit(**line)
    for op in peer_ops:
        peer = next((x for x in lines if x.get("case") == f"peer/fla_chunk_{PEER_OF[op]}" and "fwd_ms" in x), None)
        ours = results[op].get("pallas")
        if peer and ours:
            emit(case=f"{op}/pallas_vs_fla", **info, peer=f"chunk_{PEER_OF[op]}",
                 fwd_speedup_vs_fla=peer["fwd_ms"] / ours["fwd_ms"],
                 fwd_bwd_speedup_vs_fla=peer["fwd_bwd_ms"] / ours["fwd_bwd_ms"])


def _peer(shape, ops):
    """``peers_linear_attention.py`` (fla, PyTorch) in its own process: its JSON lines, or an error line."""
    return run_peer("peers_linear_attention.py", ["--shape", ",".join(map(str, shape)), "--ops", ",".join(ops)],
                    "peer/fla", PEER_TIMEOUT_S)


def _layer_cases(lengths, mixers=("gla", "deltanet")):
    """One GLA / DeltaNet layer (d_model 1024, default heads, B 1, bf16) forward + backward by length."""
    for mixer in mixers:
        for length in lengths:
            run_case(f"layer/{mixer}", lambda mixer=mixer, length=length: layer_fwd_bwd(mixer, length),
                     length=length, d_model=1024, batch=1, dtype="bfloat16")


# Block-size rows for the Triton kernels (``sweep``): overrides of the device's table row.
# ``bk``/``warps`` stand for the vector-gate tiles (``vector_bk``/``vector_warps``) too.
SWEEP = [dict(warps=w, bk=bk, vector_warps=w, vector_bk=bk, state_bk=sb, state_bv=sb, delta_bv=dbv, delta_bk=dbk,
              stages_state=st)
         for w, bk, sb, dbv, dbk, st in
         [(8, 32, 64, 32, 128, 2), (4, 32, 64, 32, 128, 2), (8, 64, 64, 32, 128, 2), (4, 64, 64, 32, 64, 2),
          (8, 32, 32, 16, 128, 2), (8, 32, 64, 64, 128, 2), (8, 32, 64, 32, 128, 1), (8, 32, 64, 32, 128, 3),
          (8, 16, 64, 32, 64, 2)]]


# GLA's own rows, swept first for it: the chunk-start form off and on (``log_space_nats`` 0 / 60),
# the states kept for the backward, then the secondary chunk and warps at 64-wide vector tiles.
GLA_SWEEP = ([dict(log_space_nats=0.0), dict(log_space_nats=60.0), dict(log_space_nats=60.0, vector_bk=32),
              dict(log_space_nats=60.0, vector_warps=8), dict(save_states=True)]
             + [dict(sub=sub, vector_bk=64, vector_warps=w) for sub, w in [(8, 4), (32, 4), (16, 2)]])


# The delta rule's own rows, swept first for it: its triangular inverses on 1, 2 or 4 diagonal blocks,
# and the forward's WY factors and states kept for the backward.
DELTA_SWEEP = [dict(delta_inverse_blocks=b) for b in (1, 2, 4)] + [dict(delta_save=True),
                                                                   dict(delta_save=True, delta_inverse_blocks=4)]


def _with_table(row, fn):
    """``fn()`` with ``row`` overriding the kernel table's row for this device."""
    from pallas_kernels.linear_attention import block_sizes as table

    saved = dict(table.TABLE)
    kind = jax.devices()[0].device_kind.lower()
    key = next((k for k in table.TABLE if k != "default" and kind.startswith(k)), "default")
    table.TABLE[key] = {**table.TABLE["default"], **table.TABLE[key], **row}
    try:
        return fn()
    finally:
        table.TABLE.clear()
        table.TABLE.update(saved)


def sweep(ops=("gla", "retention", "delta_rule")):
    """One line per block-size row and op at B2 T16384 H16 D128 (forward and forward + backward)."""
    shape = SHAPES[0]
    for op in ops:
        args = _inputs(op, *shape)
        own = {"gla": GLA_SWEEP, "delta_rule": DELTA_SWEEP}.get(op, [])
        for row in own + SWEEP:
            run_case(f"sweep/{op}", lambda row=row, op=op, args=args: _with_table(
                row, lambda: _measure(_op(op, "pallas", None), args, iters=5)), **row)


def stages(ops=("gla", "retention"), shape=SHAPES[0]):
    """Each launch of the gated kernels timed alone at ``shape``, beside the whole op in the same run:
    where GLA's (vector-gate) time goes against retention's (scalar gates). One line per op."""
    from pallas_kernels.linear_attention import api, pallas_gpu
    from pallas_kernels.linear_attention.block_sizes import block_sizes

    def measure(op):
        q, k, v, g = _inputs(op, *shape)
        full = _measure(_op(op, "pallas", None), (q, k, v, g), iters=5)
        if g.ndim == 1:  # retention: one decay per head
            g = jnp.broadcast_to(g, shape[:3])
        q, k, v, h0, seg, padded, pk, pv = api._prepare(q, k, v, None, None, CHUNK)
        assert seg is None and padded == shape[1] and (pk, pv) == shape[3:] * 2
        g = jnp.maximum(g, api.LOG_GATE_FLOOR)
        cfg = api._config(pk**-0.5, CHUNK, pk, pv, vector_gates=g.ndim == 4)
        do = jax.random.normal(jax.random.PRNGKey(1), v.shape, jnp.float32).astype(v.dtype)
        state_fwd = jax.jit(lambda k, v, g, h0: api._gated_states(k, v, g, None, h0, cfg))
        output_fwd = jax.jit(lambda q, k, v, b, h: api._gated_output(q, k, v, b, None, h, cfg, True))
        state_bwd = jax.jit(lambda q, do, b, df: pallas_gpu.state_bwd(
            q, do, b, None, df, scale=cfg.scale, chunk=cfg.chunk, bk=cfg.state_bk, bv=cfg.state_bv,
            warps=cfg.warps_state, stages=cfg.stages_state, interpret=cfg.interpret))
        grads = jax.jit(lambda q, k, v, b, h, dh, scores, do: pallas_gpu.grads(
            q, k, v, b, None, h, dh, scores, do, scale=cfg.scale, chunk=cfg.chunk, sub=cfg.sub, bk=cfg.bk,
            bv=cfg.bv, warps=cfg.warps, g_dtype=g.dtype, interpret=cfg.interpret, log_space=cfg.log_space))
        h, b, final = state_fwd(k, v, g, h0)
        _, scores = output_fwd(q, k, v, b, h)
        dfinal = jnp.zeros_like(final)
        dh, _ = state_bwd(q, do, b, dfinal)
        r = dict(op_fwd_ms=full["fwd_ms"], op_fwd_bwd_ms=full["fwd_bwd_ms"],
                 state_fwd_ms=time_ms(state_fwd, k, v, g, h0, iters=5),
                 output_fwd_ms=time_ms(output_fwd, q, k, v, b, h, iters=5),
                 state_bwd_ms=time_ms(state_bwd, q, do, b, dfinal, iters=5),
                 grads_ms=time_ms(grads, q, k, v, b, h, dh, scores, do, iters=5))
        r["launches_fwd_bwd_ms"] = 2 * r["state_fwd_ms"] + r["output_fwd_ms"] + r["state_bwd_ms"] + r["grads_ms"]
        return r

    for op in ops:
        run_case(f"stages/{op}", lambda op=op: measure(op), shape=dict(zip("BTHD", shape)), dtype="bfloat16",
                 chunk=CHUNK, block_sizes=block_sizes())


def delta_stages(shape=SHAPES[0]):
    """Each launch of the delta-rule kernels timed alone at ``shape`` beside the whole op, same run:
    the WY pass, the sequential state pass and the output forward; the backward's WY pass (with the
    output's cotangent), its reverse state pass and the gradient kernel; and ``scores_do``, all that
    ``delta_save``'s backward runs in place of the WY and state passes. One line."""
    from pallas_kernels.linear_attention import api, pallas_gpu_delta as kd
    from pallas_kernels.linear_attention.block_sizes import block_sizes

    def measure():
        q, k, v, beta = _inputs("delta_rule", *shape)
        full = _measure(_op("delta_rule", "pallas", None), (q, k, v, beta), iters=5)
        q, k, v, h0, seg, padded, pk, pv = api._prepare(q, k, v, None, None, CHUNK)
        assert seg is None and padded == shape[1] and (pk, pv) == shape[3:] * 2
        cfg = api._config(pk**-0.5, CHUNK, pk, pv)
        do = jax.random.normal(jax.random.PRNGKey(1), v.shape, jnp.float32).astype(v.dtype)
        tiles = dict(chunk=cfg.chunk, interpret=cfg.interpret)
        state = dict(bv=cfg.delta_bv, warps=cfg.warps_state, stages=cfg.stages_state, **tiles)
        wy_fwd = jax.jit(lambda k, v, beta: kd.wy(k, v, beta, None, bk=cfg.delta_bk, bv=cfg.bv, warps=cfg.warps,
                                                  inverse_blocks=cfg.inverse_blocks, **tiles))
        state_fwd = jax.jit(lambda w, u, k, h0: kd.state_fwd(w, u, k, None, h0, **state))
        output = jax.jit(lambda q, k, vnew, h: kd.output(q, k, vnew, None, h, scale=cfg.scale, bk=cfg.delta_bk,
                                                         bv=cfg.bv, warps=cfg.warps, out_dtype=v.dtype, **tiles))
        wy_bwd = jax.jit(lambda k, v, beta, q, do: kd.wy(k, v, beta, None, bk=cfg.delta_bk, bv=cfg.bv,
                                                         warps=cfg.warps, q=q, do=do, scale=cfg.scale,
                                                         inverse_blocks=cfg.inverse_blocks, **tiles))
        state_bwd = jax.jit(lambda q, k, w, dvl, do, df: kd.state_bwd(q, k, w, dvl, do, None, df, scale=cfg.scale,
                                                                      **state))
        grads = jax.jit(lambda *a: kd.grads(*a[:4], None, *a[4:], scale=cfg.scale, bk=cfg.delta_bk, bv=cfg.bv,
                                            warps=cfg.warps, beta_dtype=beta.dtype, **tiles))
        scores_do = jax.jit(lambda q, k, do: kd.scores_do(q, k, do, None, bk=cfg.delta_bk, bv=cfg.bv,
                                                          warps=cfg.warps, scale=cfg.scale, **tiles))
        u, w = wy_fwd(k, v, beta)
        h, vnew, final = state_fwd(w, u, k, h0)
        u, w, tmat, dvl = wy_bwd(k, v, beta, q, do)
        dfinal = jnp.zeros_like(final)
        dh, dd, _ = state_bwd(q, k, w, dvl, do, dfinal)
        r = dict(op_fwd_ms=full["fwd_ms"], op_fwd_bwd_ms=full["fwd_bwd_ms"],
                 wy_fwd_ms=time_ms(wy_fwd, k, v, beta, iters=5),
                 state_fwd_ms=time_ms(state_fwd, w, u, k, h0, iters=5),
                 output_fwd_ms=time_ms(output, q, k, vnew, h, iters=5),
                 wy_bwd_ms=time_ms(wy_bwd, k, v, beta, q, do, iters=5),
                 state_bwd_ms=time_ms(state_bwd, q, k, w, dvl, do, dfinal, iters=5),
                 grads_ms=time_ms(grads, q, k, v, beta, h, dh, vnew, dd, u, w, tmat, do, iters=5),
                 scores_do_ms=time_ms(scores_do, q, k, do, iters=5))  # what delta_save's backward runs instead
        r["launches_fwd_bwd_ms"] = (r["wy_fwd_ms"] + 2 * r["state_fwd_ms"] + r["output_fwd_ms"] + r["wy_bwd_ms"]
                                    + r["state_bwd_ms"] + r["grads_ms"])
        return r

    run_case("stages/delta_rule", measure, shape=dict(zip("BTHD", shape)), dtype="bfloat16", chunk=CHUNK,
             block_sizes=block_sizes())


# Per-launch rows of ``delta_kernel_sweep``: (warps, inverse blocks) of the separate inverse kernel;
# (warps, delta_bk, bv) of the WY kernel reading T, of the gradient kernel and of the output kernel;
# (delta_bv, warps, stages) of the two sequential passes. The first of each is the table's default.
DELTA_KERNEL_ROWS = dict(
    inverse=[(1, 1), (2, 1), (4, 1), (1, 2), (2, 2)],
    wy_t_in=[(8, 128, 128), (4, 128, 128), (4, 64, 64), (8, 64, 128)],
    grads=[(8, 128, 128), (4, 128, 128), (8, 64, 128), (8, 128, 64), (8, 64, 64), (4, 64, 64), (8, 32, 128)],
    output=[(8, 128, 128), (4, 128, 128), (4, 64, 128)],
    state_fwd=[(32, 4, 2), (16, 4, 2), (64, 4, 2), (32, 8, 2), (32, 4, 3), (16, 2, 2), (16, 4, 3)],
    state_bwd=[(32, 4, 2), (16, 4, 2), (64, 4, 2), (32, 8, 2), (32, 4, 3), (16, 2, 2), (16, 4, 3)],
)


def delta_kernel_sweep(shape=SHAPES[0], rows=DELTA_KERNEL_ROWS):
    """Each delta-rule launch timed alone under its own launch parameters (``rows``), one line per
    (kernel, row), beside the WY kernel solving T itself: which kernel wants which tiles."""
    from pallas_kernels.linear_attention import api, pallas_gpu_delta as kd

    q, k, v, beta = _inputs("delta_rule", *shape)
    q, k, v, h0, seg, _, _, _ = api._prepare(q, k, v, None, None, CHUNK)
    cfg = api._config(q.shape[-1] ** -0.5, CHUNK, q.shape[-1], v.shape[-1])
    do = jax.random.normal(jax.random.PRNGKey(1), v.shape, jnp.float32).astype(v.dtype)
    tiles = dict(chunk=cfg.chunk, interpret=cfg.interpret)
    info = dict(shape=dict(zip("BTHD", shape)))
    solve = jax.jit(lambda k, v, beta: kd.wy(k, v, beta, None, bk=cfg.delta_bk, bv=cfg.bv, warps=cfg.warps,
                                             write_t=True, **tiles))
    u, w, tmat = solve(k, v, beta)
    run_case("delta_kernels/wy_solving", lambda: dict(ms=time_ms(solve, k, v, beta, iters=10)), **info)
    h, vnew, final = kd.state_fwd(w, u, k, None, h0, bv=cfg.delta_bv, warps=cfg.warps_state,
                                  stages=cfg.stages_state, **tiles)
    dvl = kd.scores_do(q, k, do, None, bk=cfg.delta_bk, bv=cfg.bv, warps=cfg.warps, scale=cfg.scale, **tiles)
    dfinal = jnp.zeros_like(final)
    dh, dd, _ = kd.state_bwd(q, k, w, dvl, do, None, dfinal, scale=cfg.scale, bv=cfg.delta_bv,
                             warps=cfg.warps_state, stages=cfg.stages_state, **tiles)
    launches = dict(
        inverse=lambda r: (lambda k, beta: kd.inverse(k, beta, None, bk=cfg.delta_bk, warps=r[0],
                                                      inverse_blocks=r[1], **tiles), (k, beta)),
        wy_t_in=lambda r: (lambda k, v, beta, t: kd.wy(k, v, beta, None, warps=r[0], bk=r[1], bv=r[2], tmat=t,
                                                       **tiles), (k, v, beta, tmat)),
        grads=lambda r: (lambda *a: kd.grads(*a[:4], None, *a[4:], scale=cfg.scale, warps=r[0], bk=r[1], bv=r[2],
                                             beta_dtype=beta.dtype, **tiles),
                         (q, k, v, beta, h, dh, vnew, dd, u, w, tmat, do)),
        output=lambda r: (lambda q, k, vn, h: kd.output(q, k, vn, None, h, scale=cfg.scale, warps=r[0], bk=r[1],
                                                        bv=r[2], out_dtype=v.dtype, **tiles), (q, k, vnew, h)),
        state_fwd=lambda r: (lambda w, u, k, h0: kd.state_fwd(w, u, k, None, h0, bv=r[0], warps=r[1], stages=r[2],
                                                              **tiles), (w, u, k, h0)),
        state_bwd=lambda r: (lambda q, k, w, dvl, do, df: kd.state_bwd(q, k, w, dvl, do, None, df, scale=cfg.scale,
                                                                       bv=r[0], warps=r[1], stages=r[2], **tiles),
                             (q, k, w, dvl, do, dfinal)),
    )
    for name, kernel_rows in rows.items():
        for row in kernel_rows:
            def case(name=name, row=row):
                f, args = launches[name](row)
                return dict(ms=time_ms(jax.jit(f), *args, iters=10))

            run_case(f"delta_kernels/{name}", case, row=list(row), **info)


def run(quick: bool) -> None:
    """All cases. ``quick``: the long shape with GLA's and DeltaNet's peers, layers at 16K and 1M."""
    emit(case="linear_attention/setup", device=jax.devices()[0].device_kind, jax=jax.__version__, quick=quick)
    if quick:
        _op_cases(SHAPES[0], OPS, peer_ops=("gla", "delta_rule"))
        _layer_cases((LAYER_LENGTHS[0], LAYER_LENGTHS[-1]))
        return
    for shape in SHAPES:
        _op_cases(shape, OPS, peer_ops=OPS)
    _layer_cases(LAYER_LENGTHS)


if __name__ == "__main__":
    if "--sweep" in sys.argv:
        sweep()
    elif "--stages" in sys.argv:
        stages()
        delta_stages()
    else:
        run(quick="--quick" in sys.argv)
