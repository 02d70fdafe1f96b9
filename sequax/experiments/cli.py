"""The command line every experiment script shares, ``experiments/train.py`` included.

``--config`` takes a file or a config name (``quickstart``, ``mixers/gla``,
``lra/listops``; ``python -c 'import configs; print(configs.available())'``
lists them), optionally with ``:ARG`` for ``get_config(ARG)``; ``--workdir``;
``--config.KEY=VALUE`` overrides of any key, including the chosen mixer's and
task's options (applied by :mod:`sequax.train.overrides` after the file is
loaded, so each value gets its key's type; in a config with several runs they
are applied to each run after the run's own settings, so
``--config.optimizer.learning_rate=3e-3`` holds for every run even where a run
sets its own rate). Mistakes end in one line on
stderr. Exit statuses:

- 0: the run finished (or the workdir was already finished);
- 1: an error, as one line (a bad config value, an unreadable workdir or
  checkpoint, no space or permission on the workdir);
- 130 / 143: stopped by SIGINT (Ctrl-C) / SIGTERM (preemption) after finishing
  the current step and saving a checkpoint there; rerun to resume. A second
  signal ends the process at once (the newest checkpoint stays readable).

A script is::

    from sequax.experiments import cli, recall
    if __name__ == "__main__":
        cli.main(recall.run)
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Dict, Optional

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None,
    "A config file (configs/mixers/gla.py) or a config name (mixers/gla, lra/listops), optionally "
    "followed by :ARG for get_config(ARG). Override any key with --config.KEY=VALUE, including the "
    "chosen mixer's and task's options (--config.model.mixer_kwargs.d_state=8).",
    sys_argv=[],  # parse_flags applies the overrides (sequax.train.overrides), not config_flags
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, plots and TensorBoard.")


def _last_line(error) -> str:
    """config_flags folds a whole traceback into its messages; the last line says what failed."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def _config_file(value: str) -> str:
    """A config name -> its file (``FILE:ARG`` keeps its ``:ARG``); a path stays a path."""
    file, colon, arg = value.partition(":")  # config_flags passes "FILE:ARG" on as get_config(ARG)
    if os.path.isfile(file):
        return value
    import configs

    try:
        return configs.path(file) + colon + arg
    except ValueError as e:
        sys.exit(f"error: --config {value}: not a file, and {e}")


def _resolve_config_names(argv):
    """``--config NAME`` -> ``--config PATH`` where NAME is no file but a config name."""
    argv = list(argv)
    for i, arg in enumerate(argv):
        if arg in ("--config", "-config") and i + 1 < len(argv):
            argv[i + 1] = _config_file(argv[i + 1])
        elif arg.startswith(("--config=", "-config=")):
            flag, value = arg.split("=", 1)
            argv[i] = f"{flag}={_config_file(value)}"
    return argv


def parse_flags(argv):
    """absl flag parsing, then the ``--config.KEY=VALUE`` overrides; mistakes end in one line."""
    try:
        argv = _resolve_config_names(flags.FLAGS.read_flags_from_files(argv, force_gnu=False))
    except flags.Error as e:
        sys.exit(f"error: {e}")
    from sequax.train.overrides import apply_overrides, split_overrides

    try:
        argv, overrides = split_overrides(argv)
    except ValueError as e:
        sys.exit(f"error: {e}")
    try:
        remaining = flags.FLAGS(argv)
    except flags.Error as e:
        sys.exit(f"error: {_last_line(e)}; run with --helpfull for the flags")
    except (ImportError, SyntaxError) as e:  # raised by the config file itself
        sys.exit(f"error: cannot load --config: {type(e).__name__}: {e}")
    for name in ("config", "workdir"):
        if flags.FLAGS[name].value is None:
            sys.exit(f"error: --{name} is required; run with --helpfull for the flags")
    try:
        config = _CONFIG.value
        config.keys()  # config_flags defers file-loading errors to first access
    except OSError as e:
        sys.exit(f"error: cannot load --config: {_last_line(e)}")
    try:
        apply_overrides(config, overrides)
    except ValueError as e:
        sys.exit(f"error: a --config override does not fit the config: {e}")
    config.experiment.command_line = "\n".join(f"{key}={text}" for key, text in overrides)
    return remaining


def _report_files(summary: Dict[str, Any], workdir: str) -> str:
    plots = ", ".join(summary.get("plots", []))
    return f"wrote {os.path.join(workdir, 'metrics.json')}" + (f" and {plots}" if plots else "")


def main(run: Callable[[Any, str], Dict[str, Any]],
         report: Optional[Callable[[Dict[str, Any], str], str]] = None) -> None:
    """Run ``run(config, workdir)`` from the command line and print ``report(summary, workdir)``
    (default: the files written)."""
    report = report or _report_files

    def _main(argv):
        logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
        from sequax.train.interrupt import TrainingInterrupted
        from sequax.train.workdir import os_error

        try:
            summary = run(_CONFIG.value, _WORKDIR.value)
        except TrainingInterrupted as e:
            print(e, flush=True)
            sys.exit(e.exit_status)
        except KeyboardInterrupt:  # Ctrl-C before the first step: nothing to save
            print("interrupted before training started; nothing saved", flush=True)
            sys.exit(130)
        except (ValueError, NotImplementedError) as e:
            sys.exit(f"error: {e}")
        except OSError as e:
            sys.exit(f"error: {os_error(e, _WORKDIR.value) or e}")
        print(report(summary, _WORKDIR.value))

    app.run(_main, flags_parser=parse_flags)
