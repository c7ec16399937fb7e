"""Evaluation commands (`slg eval ...`)."""
