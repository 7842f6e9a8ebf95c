"""crl: causal-representation learning in JAX/Flax."""

from setuptools import find_packages, setup

# The set of versions that must agree, tested together on CPU (Python 3.11).
JAX = "0.10.2"
PINNED = [
    f"jax=={JAX}",
    f"jaxlib=={JAX}",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "chex==0.1.92",
    "ml-collections==1.1.0",
    "tensorflow-cpu==2.21.0",
    "tensorflow-datasets==4.9.10",
    "tensorboard==2.21.0",
]

setup(
    name="crl",
    version="0.1.0",
    description=("Causal-representation learning: Neural Attentive Circuits, "
                 "an OOD evaluation suite, amodal segmentation, fairness."),
    python_requires=">=3.10",
    packages=find_packages(include=["crl", "crl.*"]),
    install_requires=PINNED + [
        "absl-py>=2.1",
        "numpy>=1.26",
        "scipy>=1.11",
        "networkx>=3.2",
        "matplotlib>=3.8",
        "tqdm>=4.66",
        "safetensors>=0.4",  # --config.init_from=FILE.safetensors
        # tensorflow-datasets needs it to prepare any dataset (its builders
        # live in packages) but does not declare it.
        "importlib_resources>=6.0",
    ],
    extras_require={
        "test": [
            "pytest>=8", "pytest-xdist>=3.5", "scikit-learn>=1.4",
            # References the tests compare against.
            "fairlearn==0.15.0",            # fairness metrics
            "imagecorruptions==1.1.2",      # corruptions (and crl.bench)
            "opencv-python-headless>=4.8",  # cv2 for imagecorruptions
            "scikit-image>=0.22",
            "setuptools<81",                # imagecorruptions uses pkg_resources
            "statsmodels>=0.14",            # OLS intervals (transfer analysis)
            # tests/test_colabs.py executes the notebooks.
            "nbclient>=0.10", "nbformat>=5.9", "ipykernel>=6.29",
        ],
        # colabs/*.ipynb under Jupyter (matplotlib is a core requirement).
        "notebook": ["notebook>=7", "ipykernel>=6.29", "nbclient>=0.10",
                     "nbformat>=5.9"],
        "cuda12": [f"jax[cuda12]=={JAX}"],
        "tpu": [f"jax[tpu]=={JAX}"],
    },
    entry_points={"console_scripts": ["crl-main=crl.main:run"]},
)
