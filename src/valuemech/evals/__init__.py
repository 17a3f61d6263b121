"""Evaluations of value expression (baseline and under steering)."""
