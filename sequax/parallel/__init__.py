"""Scale-out: device meshes, sharding rules and sequence parallelism.

- :mod:`sequax.parallel.mesh`: the ``Mesh`` from ``config.mesh`` (axes ``data``,
  ``fsdp``, ``tensor``, ``sequence``) and batch placement, process by process;
- :mod:`sequax.parallel.sharding`: the logical axes of every parameter, the
  rules mapping them to mesh axes (``config.sharding.rules``), the train state's
  shardings, a run's :class:`~sequax.parallel.sharding.Layout`;
- :mod:`sequax.parallel.context`: the layout model code is traced under; mixers
  ask :func:`~sequax.parallel.context.sequence_parallel` whether the sequence is split;
- :mod:`sequax.parallel.attention`: ring and all-to-all attention;
- :mod:`sequax.parallel.sequence`: the other mixers' hot ops with the sequence
  split, passing compact states (or, for convolutions, input history) between shards.
"""
