"""The test suite, a package that mirrors src/vitkit (tests/<package>/test_<module>.py).

Being a package gives every test module a unique dotted name (tests.data.test_loader vs tests.infer.test_...) under
pytest's default import mode, and lets tests import the shared helpers as ``tests.helpers.<name>``.
"""
