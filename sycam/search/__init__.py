"""Synthesis: enumerate and optimise CAM expressions against a metric."""
