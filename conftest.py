"""Root conftest: the documentation pages (README.md, docs/**/*.md) are collected as tests.

Every fenced python and bash block runs (tests/docs/runner.py; the rules: docs/development.md,
"The docs are tests"). ``pytest`` with no paths collects them (testpaths in pyproject.toml); run one
page with ``pytest docs/viz.md`` or the README with ``pytest README.md``.
"""

import pytest
from tests.docs.runner import collect_hook, group_by_page

pytest_collect_file = collect_hook()


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups (--dist loadgroup)
def pytest_collection_modifyitems(items):
    group_by_page(items)
