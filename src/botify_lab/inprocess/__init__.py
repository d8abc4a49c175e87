"""In-process replays of what the pipeline otherwise runs through the service: the course's TOP_POP experiment
(`top_pop`) and the fidelity checks' playbacks of a world (`world_checks`), fast enough to search a world's knobs."""
