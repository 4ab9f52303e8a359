"""TRACE cot."""
