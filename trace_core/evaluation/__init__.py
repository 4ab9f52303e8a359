"""TRACE evaluation."""
