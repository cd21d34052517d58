"""Typed Flyte tasks: thin wrappers over `autoe2e.pipeline` stages (no logic of their own)."""
