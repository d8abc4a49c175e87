"""Stage entry points of dvc.yaml that are plain scripts rather than notebooks."""
