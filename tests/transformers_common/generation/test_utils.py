"""Stand-in for transformers' tests/generation/test_utils.py (not in the sdist). DeiT does not generate;
`ModelTesterMixin` only uses this name in an `issubclass` check."""


class GenerationTesterMixin:
    pass
