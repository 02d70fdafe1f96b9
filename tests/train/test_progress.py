"""Progress output: a live bar on a terminal, plain lines (no carriage returns) anywhere else."""

import fcntl
import io
import os
import pty
import re
import struct
import termios
import threading

from sequax.train.progress import Progress


def show(progress, steps=30, log_every=10):
    for step in range(1, steps + 1):
        progress.advance(step)
        if step % log_every == 0:
            progress.log(step, {"loss": 1.5, "accuracy": 0.25}, 12345.0)
    progress.write("step 30: eval loss 1.0000 accuracy 1.0000")
    progress.close()


def test_plain_lines_when_not_a_terminal():
    stream = io.StringIO()
    show(Progress(0, 30, stream=stream))
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert [line.split(":")[0] for line in lines] == ["step 10/30", "step 20/30", "step 30/30", "step 30"]
    assert re.fullmatch(r"step 20/30: loss 1\.5000 accuracy 0\.2500 tokens/s 12,345 eta \d+:\d\d:\d\d", lines[1])


def test_a_live_bar_on_a_terminal():
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    chunks = []

    def read_all():  # drain the terminal while the bar writes to it
        while True:
            try:
                chunk = os.read(leader, 1 << 16)
            except OSError:  # the other end closed
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=read_all)
    reader.start()
    with os.fdopen(follower, "w") as terminal:
        show(Progress(0, 30, stream=terminal))
    reader.join(timeout=10)
    os.close(leader)
    output = b"".join(chunks).decode()
    assert "\r" in output and "train: 100%" in output and "loss=1.5000" in output
    assert "step 30: eval loss" in output and "step 10/30:" not in output
