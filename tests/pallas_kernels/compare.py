"""Comparisons shared by the kernel tests."""

import numpy as np


def assert_close_to_scale(got, want, name, rtol=2e-5):
    """``got`` equals ``want`` within ``rtol`` of each element or of ``want``'s largest magnitude."""
    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    scale = float(np.max(np.abs(want))) + 1e-30
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale, err_msg=name)
