"""Spatial Context Networks: a staged, DVC-driven reference implementation."""

__version__ = "0.1.0"
