"""The nnx version, in one place (the package, the kernel cache folder and saved files read it)."""
__version__ = "0.1.0"
