"""The workflow tests' shared fixture; helpers live in workflow_support."""

from __future__ import annotations

from pathlib import Path

import pytest
from workflow_support import copy_workflow


@pytest.fixture(scope="module")
def workflow(tmp_path_factory) -> Path:
    """A copy of the workflow in a fresh directory, shared by one test module."""
    return copy_workflow(tmp_path_factory.mktemp("workflow"))
