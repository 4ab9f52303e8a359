"""TRACE indexing."""
