"""Explanation methods: one module per method, and the registry that knows them all."""

from .registry import Method, Option, available, get, register

__all__ = ["Method", "Option", "available", "get", "register"]
