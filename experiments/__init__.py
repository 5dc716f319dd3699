"""Experiments that measure hf_deit (not part of the installed library): `python -m experiments.reproduce_table`
trains the DeiT paper's Tables 3 and 5 in miniature and writes docs/results.md. Run from the repository root."""
