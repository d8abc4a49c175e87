"""Research code the pipeline stages and notebooks call: logs, models, exports and A/B analysis."""
