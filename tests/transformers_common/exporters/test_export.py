"""Stand-in for transformers' tests/exporters/test_export.py (not in the sdist): the mixin without export tests."""


class ExportTesterMixin:
    pass
