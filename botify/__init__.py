"""The botify recommender service: a Flask app built from a config of experiments, logging every event."""
from .app import create_app

__all__ = ["create_app"]
