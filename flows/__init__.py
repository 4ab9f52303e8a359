"""Prefect flows that orchestrate the DVC pipeline (see flows/pipeline.py, flows/deploy.py)."""
