"""Block sizes for the linear-attention kernels, per device kind.

Keys (GPU kernels):

- ``state_bk``, ``state_bv``: the ``[dk, dv]`` tile of the state one program of a
  sequential (chunk-walking) kernel carries for the gated recurrence;
  ``delta_bv``: the ``dv`` tile of the delta-rule state (its ``dk`` is never
  split: ``k S`` contracts over it).
- ``bk``, ``bv``: feature tiles of the chunk-parallel gated kernels (loops over
  feature blocks inside one program per chunk); ``delta_bk``: the delta rule's.
- ``vector_bk``, ``vector_warps``: ``bk`` and ``warps`` of the chunk-parallel
  kernels for vector gates (GLA), whose per-feature decays make them costlier
  than the scalar-gate ones (H200: 64 and 4 cut GLA's forward + backward from
  20.2 to 13.7 ms at B2 T16384 H16 D128 in ``python -m
  experiments.bench.linear_attention --sweep``, 2026-12-02; with the chunk-start
  form, 64 and 8: 7.77 ms, against 8.35 at 4 warps and 8.40 at 32-wide tiles).
- ``sub``: GLA's secondary chunk (diagonal blocks of the intra-chunk scores).
- ``log_space_nats``: GLA chunks whose cumulative gate stays above minus this
  (per feature block) skip the secondary chunks and form the scores through the
  chunk start (``pallas_gpu`` docstring; GPU and TPU kernels); 0 turns that off.
- ``save_states``: the gated kernels' forward keeps the per-chunk states ``h``
  and cumulative gates ``b`` for the backward instead of the backward
  recomputing them (one sequential pass less; ``dk * dv / C`` matmul-dtype
  values and ``dk`` float32 values more per token and head, saved per layer).
  H200, B2 T16384 H16 D128, same run (2026-12-02): GLA forward + backward
  7.46 -> 6.39 ms, retention 3.95 -> 3.36 ms; on for Hopper, off elsewhere
  until measured.
- ``delta_save``: the delta rule's forward keeps its WY factors ``U``, ``W``,
  ``T`` and the per-chunk states ``h`` and new values for the backward, which
  then forms only ``P^T dO`` instead of repeating the WY and state passes
  (``dk + 2 dv`` values in k's dtype, ``C`` float32 values and ``dk * dv / C``
  state values more per token and head, saved per layer). H200, B2 T16384 H16
  D128, same run (2026-12-02): forward + backward 7.86 -> 5.95 ms; on for
  Hopper.
- ``delta_inverse_blocks``: the delta rule's triangular inverses (``[C/2, C/2]``)
  solved on this many diagonal blocks at once and merged by matmuls
  (``tiles.inverse_unit_lower``): a dependent chain that many times shorter,
  but each step still a full-tile operation. H200, same run: 2 and 4 blocks
  slower (8.10 -> 8.89 / 8.68 ms forward + backward; the WY kernel 1.26 ->
  2.34 ms at 4), so 1 (row by row).
- ``delta_inverse_warps``: 0 solves the inverses inside the WY kernel; n > 0 in
  a kernel of their own with n warps (``pallas_gpu_delta.inverse``), which
  the WY kernel then reads: the substitution's reductions stay inside a warp
  or two, and several such programs share an SM. Off until measured.
- ``warps_state``, ``stages_state``: Triton launch parameters of the sequential
  kernels (``stages`` > 1 pipelines the next chunk's loads); ``warps``: of the
  chunk-parallel kernels. (Chosen from ``ptxas -v`` on the compiled kernels:
  8 warps and 32-wide gated feature tiles keep the backward kernels at most a
  few hundred bytes of spills per thread at head dim 128.)

TPU kernels use ``tpu_bv`` (lane tile of ``dv``). Rows are looked up by the start
of ``jax.devices()[0].device_kind`` (lower case); ``"default"`` serves every
other device and interpret mode. ``chunk`` is the caller's ``chunk_size``.
"""

import jax

TABLE = {
    "nvidia h200": dict(state_bk=64, state_bv=64, delta_bv=32, bk=32, delta_bk=128, bv=128, warps=8, warps_state=4,
                        stages_state=2, vector_bk=64, vector_warps=8, save_states=True, delta_save=True),
    "nvidia h100": dict(state_bk=64, state_bv=64, delta_bv=32, bk=32, delta_bk=128, bv=128, warps=8, warps_state=4,
                        stages_state=2, save_states=True, delta_save=True),
    "tpu": dict(tpu_bv=128),
    "default": dict(state_bk=64, state_bv=64, delta_bv=32, bk=32, delta_bk=128, bv=128, sub=16, warps=8,
                    warps_state=4, stages_state=2, vector_bk=32, vector_warps=8, log_space_nats=60.0,
                    save_states=False, delta_save=False, delta_inverse_blocks=1, delta_inverse_warps=0,
                    tpu_bv=128),
}


def block_sizes(**overrides):
    """The table row for the default device, with ``overrides`` (non-None) applied."""
    kind = jax.devices()[0].device_kind.lower()
    row = next((v for k, v in TABLE.items() if k != "default" and kind.startswith(k)), TABLE["default"])
    return {**TABLE["default"], **row, **{k: v for k, v in overrides.items() if v is not None}}
