"""Pioneer: adapt small language models to a task, then keep improving them from production failures."""

__version__ = "0.1.0"
