"""The botify recommender service: a Flask app built from a config of experiments, logging every event.

`create_app(config)` gives the HTTP app; `Service.open(config)` the same service without HTTP (see botify.service).
"""

from .app import create_app
from .service import Service

__all__ = ["Service", "create_app"]
