"""State-space models as pure functions.

Submodules: ``selective`` (Mamba's selective scan), ``ssd`` (Mamba-2's
state-space duality), ``s4`` (S4/S4D kernels, HiPPO initialisations,
discretisation), ``s5`` (MIMO diagonal SSM). The public functions are
re-exported here.
"""

from sequax.ops.ssm.selective import selective_scan, selective_scan_step  # noqa: E402,F401
from sequax.ops.ssm.ssd import ssd, ssd_step  # noqa: E402,F401
from sequax.ops.ssm.s4 import (  # noqa: E402,F401
    dense_ssm_carry, dense_ssm_step, diag_ssm_carry, diag_ssm_step, discretize_bilinear,
    discretize_bilinear_dense, discretize_zoh, dplr_dense, hippo_legs, log_dt_init, nplr_legs, s4_c_tilde, s4_dplr_kernel, s4_dplr_recurrence,
    s4d_init, s4d_kernel,
)
from sequax.ops.ssm.s5 import hippo_n, s5_apply, s5_discretize, s5_init, s5_step  # noqa: E402,F401
