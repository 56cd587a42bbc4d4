"""Explanation methods: one module per method, and the registry that knows them all."""
