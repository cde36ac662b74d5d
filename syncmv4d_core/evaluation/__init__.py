"""Metrics and evaluation tables."""
