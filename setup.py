"""keras_iresnet: Invertible Residual Networks for Keras 3 and TensorFlow Probability."""

import pathlib

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).parent

setup(
    name="keras_iresnet",
    version="0.1.0",
    description=(
        "Invertible Residual Networks (i-ResNet, Behrmann et al. 2019) as Keras 3 layers, "
        "models and a TensorFlow Probability bijector."
    ),
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    packages=find_packages(include=["keras_iresnet", "keras_iresnet.*"]),
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.16",
        "keras>=3.0",
        "tensorflow-probability>=0.24",
        "tf-keras>=2.16",  # tensorflow-probability imports tf_keras at start-up
        "tensorflow-datasets>=4.9",
        # TFDS' download path imports it (etils.epath) but does not declare it
        "importlib_resources",
        "keras-tuner>=1.4",
        "tensorboard>=2.16",  # keras-tuner imports it; TF 2.21 no longer installs it
        "scikit-learn>=1.2",  # the bundled digits data set
        "matplotlib>=3.6",
        "numpy>=1.23",
    ],
    extras_require={
        "test": ["pytest>=7", "nbclient>=0.7", "nbformat>=5.7", "ipykernel>=6"],
        "notebooks": ["jupyter", "nbclient>=0.7", "nbformat>=5.7", "ipykernel>=6"],
        # The external reference of benchmarks.speed_normflows: PyTorch residual flows (CPU build).
        "bench": ["torch", "normflows"],
    },
    entry_points={"console_scripts": ["iresnet=keras_iresnet.cli:main"]},
    package_data={"keras_iresnet": ["py.typed"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
