"""The values a model setting may take, in a module light enough for the params schema to import (it checks
params.yaml before any stage runs) without loading torch or the collaborative libraries."""

SIMILARITIES = ("dot", "cosine", "mlp")  # how the contextual model scores a (context, next) pair
LOSSES = ("mse", "mae")
# A sweep's similarity axis: the model's similarities, with the mlp also tried with its final sigmoid (the report did).
SWEEP_SIMILARITIES = (*SIMILARITIES, "mlp_sigmoid")
OPTIMIZERS = ("lazy_adam", "adam")
ALGORITHMS = ("lightfm", "als", "bpr")  # the Indexed recommender's collaborative model
