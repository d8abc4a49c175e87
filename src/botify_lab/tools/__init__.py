"""Developer tools that are not pipeline stages: `world_search` (`make world-search`), the search over the world
generator's knobs for a world that reacts like the course's real one."""
