"""State-space models as pure functions.

Submodules: ``selective`` (Mamba's selective scan), ``ssd`` (Mamba-2's
state-space duality), ``s4`` (S4/S4D kernels, HiPPO initialisations,
discretisation), ``s5`` (MIMO diagonal SSM). The public functions are
re-exported here.
"""
