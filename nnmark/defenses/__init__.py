"""Defenses the owner runs before verification (e.g. undoing permutation and widening)."""
