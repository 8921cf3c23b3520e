"""Data sources: loaders for files on disk and the built-in synthetic generator."""

from trainer_service.data.interactions import Interactions

__all__ = ["Interactions"]
