"""The stop-signal handling the trainer uses (end-to-end runs are in test_preemption.py)."""

import os
import signal
import threading

import pytest

from sequax.train.interrupt import StopSignals, TrainingInterrupted, exit_status


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                    reason="signal handlers need the main thread")
def test_the_first_signal_is_recorded_and_a_second_would_end_the_process():
    # SIGINT as in a foreground process: a background job (`cmd &`) inherits it ignored, and an
    # ignored signal is left alone (the next test)
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        before = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
        with StopSignals() as stop:
            assert stop.signum is None
            os.kill(os.getpid(), signal.SIGTERM)  # its handler runs before the next line
            assert stop.signum == signal.SIGTERM
            assert signal.getsignal(signal.SIGINT) is signal.SIG_DFL
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    finally:
        signal.signal(signal.SIGINT, outer)


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                    reason="signal handlers need the main thread")
def test_an_ignored_signal_stays_ignored():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with StopSignals() as stop:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)
            assert stop.signum is None
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_outside_the_main_thread_signals_are_left_alone():
    before = signal.getsignal(signal.SIGTERM)
    seen = []

    def body():
        with StopSignals() as stop:
            seen.append((stop.signum, signal.getsignal(signal.SIGTERM)))

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert seen == [(None, before)]


def test_the_interruption_says_how_to_resume_and_carries_the_exit_status():
    error = TrainingInterrupted(35, signal.SIGINT)
    assert str(error) == "interrupted at step 35; checkpoint saved; rerun the same command to resume"
    assert isinstance(error, KeyboardInterrupt) and error.step == 35
    assert (error.exit_status, exit_status(signal.SIGTERM)) == (130, 143)
