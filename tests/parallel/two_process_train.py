"""One of two ``jax.distributed`` processes on localhost (CPU, 2 devices each), for test_sharded_training.

    python tests/parallel/two_process_train.py PROCESS_ID PORT WORKDIR NUM_STEPS [KILL_AT_STEP]

Trains :func:`tests.parallel.sharded_config.tiny_config` on the 4-device mesh
``(data=2, fsdp=2)`` spanning both processes. With ``KILL_AT_STEP`` it stops
there (writing a checkpoint) and kills itself with SIGKILL, as a preempted job.
"""

import os
import signal
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
os.environ["JAX_PLATFORMS"] = "cpu"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from sequax.train import train_and_evaluate  # noqa: E402
from tests.parallel.sharded_config import tiny_config  # noqa: E402


def main(process_id, port, workdir, num_steps, kill_at=None):
    config = tiny_config(int(num_steps), data=2, fsdp=2)
    config.distributed.coordinator_address = f"localhost:{port}"
    config.distributed.num_processes, config.distributed.process_id = 2, int(process_id)
    train_and_evaluate(config, workdir, stop_at_step=None if kill_at is None else int(kill_at))
    if kill_at is not None:
        os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    main(*sys.argv[1:])
