"""G2RL Workbench: compare exploration methods for RL on LLM reasoning, under one setup."""

__version__ = "0.1.0"
