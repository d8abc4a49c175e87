"""The values a model setting may take, in a module light enough for the params schema to import (it checks
params.yaml before any stage runs) without loading torch or the collaborative libraries."""

SIMILARITIES = ("dot", "cosine", "mlp")  # how the contextual model scores a (context, next) pair
LOSSES = ("mse", "mae")
OPTIMIZERS = ("lazy_adam", "adam")
ALGORITHMS = ("lightfm", "als", "bpr")  # the Indexed recommender's collaborative model
