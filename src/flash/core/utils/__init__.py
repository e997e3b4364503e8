"""Utilities shared by every layer: CPU threads, progress bars and plots."""
