"""sequax: token mixers for long sequences in JAX/Flax."""

from setuptools import find_packages, setup

setup(
    name="sequax",
    version="0.1.0",
    description="Attention, linear attention, state-space scans and long convolutions "
    "for long-sequence models in JAX/Flax, with Pallas kernels and sequence sharding.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    url="https://github.com/sequax/sequax",  # the one place the repository URL is declared
    python_requires=">=3.10",
    # configs: the experiment configs, importable by name from anywhere (``configs.get("quickstart")``).
    packages=find_packages(include=["sequax*", "pallas_kernels*", "configs", "configs.*"]),
    install_requires=[
        "jax>=0.10.2",
        "flax>=0.10",
        "optax>=0.2.4",
        "orbax-checkpoint>=0.11",
        "ml-collections>=1.0",
        "numpy>=1.26",
        "tqdm>=4.66",
        "matplotlib>=3.8",
        # TensorBoard event files without TensorFlow.
        "tensorboardX>=2.6",
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "pytest-xdist>=3.5",
            "hypothesis>=6.100",
            "chex>=0.1.88",
            "nbclient>=0.10",
            "nbformat>=5.10",
            "ipykernel>=6.29",
        ],
        # The TensorBoard app, for `tensorboard --logdir WORKDIR` (the trainer writes event files without it).
        "tensorboard": ["tensorboard>=2.16"],
        "cuda": ["jax[cuda12]>=0.10.2"],
        "tpu": ["jax[tpu]>=0.10.2"],
        # Preparing TFDS datasets (LRA Text / Image); training reads them without TensorFlow
        # (array-record: for datasets prepared in the ArrayRecord format).
        "tfds": ["tensorflow-datasets>=4.9", "tensorflow-cpu>=2.16", "array-record>=0.5"],
        "triton": ["jax-triton>=0.3"],
    },
)
