"""TRACE data."""
