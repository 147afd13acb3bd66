"""Handbook-format data: reading, simulating and publishing it."""
