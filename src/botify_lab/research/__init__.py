"""The research core: reading logs, sessions, training pairs, models, exports, the collaborative model and the A/B
statistics.

Models learn only from the service's event log and the public catalog. This package therefore imports nothing from
the simulator (`sim`), which holds the hidden world, nor from the service (`botify`), nor from the orchestration
that starts them (`botify_lab.pipeline`, `.stages`, `.inprocess`, `.tools`);
`tests/architecture/test_import_rules.py` enforces it.
"""
