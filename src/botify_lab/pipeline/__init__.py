"""What the pipeline's stages share: params.yaml and its schema (`params`), the paths of dvc.yaml (`layout`), atomic
outputs (`outputs`), the notebook runner (`notebook`), traffic through the service (`experiment`), the loop of days'
rounds (`rounds`), the world's bootstrap (`bootstrap`, `world`) and the true-neighbour reference (`reference`). The
stages themselves are `botify_lab.stages`."""
