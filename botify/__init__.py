"""The botify recommender service: a Flask app built from a config of experiments, logging every event.

An experiment's arms serve the course's recommenders (botify.recommenders) or classes of one's own named in the
config (botify.custom; examples/recommenders/README.md shows how to write one).

`create_app(config)` gives the HTTP app; `Service.open(config)` the same service without HTTP (see botify.service).
"""

from .app import create_app
from .service import Service

__all__ = ["Service", "create_app"]
