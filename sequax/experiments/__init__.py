"""Experiment suites over the trainer: each trains a config's runs and reports across them.

``experiments/<name>.py --config <experiment>/<config> --workdir W`` calls
``sequax.experiments.<name>.run(config, W)``:

- :mod:`~sequax.experiments.lra`: Long Range Arena (ListOps, Text, Retrieval, Image,
  Pathfinder, Path-X), test accuracy beside the published one;
- :mod:`~sequax.experiments.recall`: MQAR width x length sweeps, induction heads,
  selective copying, passkey retrieval;
- :mod:`~sequax.experiments.length_generalization`: positional schemes trained short,
  evaluated long (exact match), task hinting;
- :mod:`~sequax.experiments.lm`: byte-level language modelling, bits per byte, and
  sampling (:mod:`~sequax.experiments.sampling`).

:mod:`~sequax.experiments.runner` holds what they share: the runs of a config
(``config.experiment.runs``), each trained (and resumed) in ``W/<run>``, and the
experiment's own ``W/metrics.json``, TensorBoard scalars and plots.
"""
