"""srpipe: a reproducible pipeline for image super-resolution."""

__version__ = "0.1.0"
