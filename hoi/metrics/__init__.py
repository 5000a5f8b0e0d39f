"""Metrics of generated video and motion."""
