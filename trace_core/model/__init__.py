"""TRACE model."""
