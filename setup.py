"""Build script.

Metadata lives in pyproject.toml. This file exists for the native extensions in ``csrc/``
(C++ CPU kernels, CUDA kernels), which need ``torch.utils.cpp_extension`` at build time and
are therefore built with ``pip install --no-build-isolation`` against the torch already installed.
Until those sources exist it is a plain setuptools build.
"""
from setuptools import setup

setup()
