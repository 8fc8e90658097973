"""Build of the optional C accelerator; everything else about the package is in pyproject.toml."""

from setuptools import Extension, setup

# The per-entry pack/read loops in C (src/aiowal/_speedups.c). Optional: without a compiler the build still
# succeeds and aiowal runs its pure-Python paths, which write the same bytes and read the same entries.
setup(ext_modules=[Extension("aiowal._speedups", ["src/aiowal/_speedups.c"], optional=True)])
