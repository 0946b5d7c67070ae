"""The monitor's data: an index of every job (pandas, kept current by a watcher) and its statistics.

Importable without Streamlit; `pages/monitor.py` only shows what this computes.
"""
from .index import JobIndex

__all__ = ["JobIndex"]
