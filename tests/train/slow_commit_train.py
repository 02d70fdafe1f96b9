"""``experiments/train.py`` whose checkpoint commit stalls once a stop signal has arrived.

For test_preemption: after the first SIGTERM, the checkpoint saved at the
interrupted step prints ``committing STEP`` with all its files written and
waits before the rename that would commit it, so a second signal is sure to
arrive in the middle of the save.
"""

import os
import runpy
import signal
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from orbax.checkpoint._src.path import atomicity  # noqa: E402

_commit = atomicity.AtomicRenameTemporaryPath.finalize


async def _stalled_commit(self, *args, **kwargs):
    final = self.get_final().name
    if final.isdigit() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:  # the trainer has stopped
        print(f"committing {final}", flush=True)
        time.sleep(120)
    return await _commit(self, *args, **kwargs)


atomicity.AtomicRenameTemporaryPath.finalize = _stalled_commit
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, even if the test runner ignores it
sys.argv = [os.path.join(ROOT, "experiments", "train.py")] + sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
