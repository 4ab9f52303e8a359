"""TRACE: task-adaptive reasoning and compressing embeddings for universal multimodal retrieval."""

__version__ = "0.1.0"
