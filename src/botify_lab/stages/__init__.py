"""The DVC stages' bodies, one module per stage of dvc.yaml (`python -m botify_lab.stages.<stage>`, or the notebook
a stage runs calls into them); what they share (params, layout, outputs, the notebook runner, traffic) is
`botify_lab.pipeline`."""
