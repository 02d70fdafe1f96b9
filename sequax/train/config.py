"""The config schema: every section and key a sequax config may set.

Config files in ``configs/`` start from :func:`default_config` and change what
they need. :func:`validate` refuses keys the schema does not know, so a typo
fails at launch rather than being silently ignored. Free-form sections
(``model.mixer_kwargs``, ``data.task_kwargs``) are checked by the mixer or
task they configure.
"""

from __future__ import annotations

import ml_collections

# Sections whose keys are owned by the object they configure.
FREE_FORM = ("model.mixer_kwargs", "data.task_kwargs")
# Sections whose keys are names the config chooses (splits, evaluations), checked by the trainer.
NAMED_SECTIONS = ("data.split_sizes", "evals", "experiment.runs")

# The keys of one named evaluation, config.evals.<name> = {...}; each may be left out.
EVAL_ENTRY = {
    "split": "validation",  # train | validation | test
    "num_batches": None,  # batches, or "full": one pass over a finite split; None: eval.num_batches
    "batch_size": None,  # None: eval.batch_size (0 there: train.batch_size)
    "every": None,  # steps between runs (and at the end); 0: only at the end; None: eval.every
    "task_kwargs": {},  # data.task_kwargs overrides for this evaluation, e.g. {"seq_len": 1024}
}


def default_config() -> ml_collections.ConfigDict:
    """All keys with their defaults."""
    c = ml_collections.ConfigDict()

    c.model = ml_collections.ConfigDict()
    c.model.mixer = "attention"  # name in sequax.mixers.available()
    c.model.mixer_kwargs = ml_collections.ConfigDict()  # mixer-specific options
    c.model.vocab_size = 256  # input token vocabulary
    c.model.d_model = 64  # residual stream width
    c.model.num_layers = 2  # residual blocks
    c.model.num_heads = 4  # for mixers with heads
    c.model.mlp_ratio = 2.0  # gated-MLP hidden width / d_model; 0 drops the MLP
    c.model.causal = True  # causal mixing (language modelling); False for classification
    c.model.head = "lm"  # lm | classification | retrieval
    c.model.num_classes = 0  # classification/retrieval heads only
    c.model.pooling = "mean"  # classification pooling: mean | last
    c.model.position_embedding = "none"  # none | learned (absolute, added to embeddings)
    c.model.max_length = 0  # for learned position embeddings
    c.model.norm = "rmsnorm"  # rmsnorm | layernorm
    c.model.dropout = 0.0  # residual dropout
    c.model.dtype = "float32"  # compute dtype (bfloat16 on accelerators); params stay float32
    c.model.tie_embeddings = False  # lm head shares the embedding matrix
    c.model.backend = "auto"  # op implementation for every mixer: auto | xla | cudnn | pallas
    # Attention when mesh.sequence > 1 (sequax.parallel.attention): ring (zigzag layout when causal) |
    # all_to_all (Ulysses; num_heads a multiple of mesh.sequence) | none (XLA gathers keys and values)
    c.model.sequence_parallel = "ring"

    c.data = ml_collections.ConfigDict()
    c.data.task = "mqar"  # name in sequax.data.available_tasks()
    c.data.task_kwargs = ml_collections.ConfigDict()  # task-specific options
    c.data.split_sizes = ml_collections.ConfigDict()  # {split: N}: a fixed set of N examples; others endless

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "adamw"  # adamw | adam | sgd | lamb
    c.optimizer.learning_rate = 1e-3  # peak learning rate
    c.optimizer.schedule = "cosine"  # cosine | constant | linear
    c.optimizer.warmup_steps = 100  # linear warmup from 0
    c.optimizer.end_learning_rate_ratio = 0.0  # final lr / peak lr (cosine, linear)
    c.optimizer.weight_decay = 0.1  # decoupled; not applied to biases, norms, embeddings
    c.optimizer.b1 = 0.9
    c.optimizer.b2 = 0.98
    c.optimizer.eps = 1e-8
    c.optimizer.grad_clip = 1.0  # global-norm clipping; 0 disables
    c.optimizer.ssm_learning_rate = 0.0  # >0: SSM parameters at this lr without weight decay

    c.train = ml_collections.ConfigDict()
    c.train.num_steps = 1000
    c.train.batch_size = 64
    c.train.seed = 0
    c.train.log_every = 50  # steps between TensorBoard/progress updates

    c.eval = ml_collections.ConfigDict()
    c.eval.every = 250  # steps between evaluations (and at the end)
    c.eval.num_batches = 4
    c.eval.batch_size = 0  # 0: same as train.batch_size

    # Named evaluations {name: {key: value}} (keys in EVAL_ENTRY), each logged as <name>/loss and
    # <name>/accuracy; the eval section gives their defaults. Empty: one evaluation "eval" of
    # eval.num_batches validation batches. E.g. {"long": {"split": "test", "task_kwargs": {"seq_len": 1024}}}
    c.evals = ml_collections.ConfigDict()

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every = 500  # steps between checkpoints (and at the end); 0 disables
    c.checkpoint.keep = 2  # newest checkpoints kept

    # Read by the experiment scripts (experiments/<name>.py, sequax.experiments); the trainer ignores it.
    c.experiment = ml_collections.ConfigDict()
    # {run: {section: {key: value}}}: nested overrides of this config, each run trained in WORKDIR/<run>
    # (a sweep); empty: one run in WORKDIR. E.g. {"mamba_d64": {"model": {"mixer": "mamba", "d_model": 64}}}
    c.experiment.runs = ml_collections.ConfigDict()
    c.experiment.only = ""  # comma-separated run names or fnmatch patterns to train now; "" trains all
    c.experiment.rope_scalings = ""  # length generalisation: also evaluate RoPE runs with these ("linear,ntk")
    # Set by the command line (sequax.experiments.cli): its --config.KEY=VALUE overrides as "KEY=VALUE"
    # lines, applied again to every run after the run's own overrides, so what is typed wins.
    c.experiment.command_line = ""

    # Device mesh axis sizes (sequax.parallel.mesh); one may be -1 (the devices the others leave).
    # data, fsdp: split the batch; fsdp also parameters and optimizer state; tensor: heads, MLP and
    # mixer channels; sequence: the length (every mixer either splits it or refuses in one line).
    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = 1
    c.mesh.fsdp = 1
    c.mesh.tensor = 1
    c.mesh.sequence = 1

    # Logical axis -> mesh axes, in order of precedence (sequax.parallel.sharding, which names every
    # parameter's axes): (logical, mesh axis | (mesh axes) | None). A mesh axis an array already uses
    # is skipped; a dimension the mesh axes do not divide stays whole. With the default mesh (all 1)
    # nothing is split.
    c.sharding = ml_collections.ConfigDict()
    c.sharding.rules = (
        ("batch", ("data", "fsdp")),  # activations and batches: rows over data x fsdp
        ("length", "sequence"),  # the sequence over sequence
        ("vocab", "tensor"),  # embedding and LM head rows/columns
        ("heads", "tensor"),  # attention / linear-attention heads, their projections
        ("kv_heads", "tensor"),
        ("mlp", "tensor"),  # the gated MLP's hidden units
        ("inner", "tensor"),  # Mamba / Hyena inner channels
        ("embed", "fsdp"),  # FSDP: every parameter's d_model dimension
    )

    # Multi-process runs (sequax.train.distributed). Empty: from the environment (a SLURM step, a Cloud
    # TPU slice, Open MPI) or one process.
    c.distributed = ml_collections.ConfigDict()
    c.distributed.coordinator_address = ""  # "host:port" of process 0; then the next two are required
    c.distributed.num_processes = 0
    c.distributed.process_id = -1
    c.distributed.cluster = "auto"  # auto: detect the job from the environment | none: never
    return c


def _flatten(cfg, prefix=""):
    out = {}
    for key, value in cfg.items():
        path = f"{prefix}{key}"
        if isinstance(value, (ml_collections.ConfigDict, dict)) and path not in FREE_FORM + NAMED_SECTIONS:
            out.update(_flatten(value, path + "."))
        else:
            out[path] = value
    return out


def validate(config: ml_collections.ConfigDict) -> None:
    """Raise ``ValueError`` for keys the schema does not know."""
    known = _flatten(default_config())
    given = _flatten(config)
    unknown = sorted(k for k in given if k not in known)
    if unknown:
        raise ValueError(
            f"unknown config key(s): {', '.join(unknown)}; "
            "fix the spelling or see sequax/train/config.py for the keys each section takes"
        )
