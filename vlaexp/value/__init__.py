"""Distributional value function (RECAP-style): labels, bins, losses, metrics."""
