"""Pure functions on arrays: the math under every mixer.

Modules: ``attention``, ``positional``, ``linear_attention``, ``scan``,
``ssm``, ``fftconv``. Hot ops take ``backend=`` so Pallas kernels and
sharded versions can slot in later with the same signature.
"""
