"""TRACE training."""
