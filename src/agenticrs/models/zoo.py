"""Imports every built-in model so that each registers its name (one model per file)."""

from agenticrs.models import lr  # noqa: F401
from agenticrs.models import fm  # noqa: F401
from agenticrs.models import deepfm  # noqa: F401
from agenticrs.models import dcnv2  # noqa: F401
from agenticrs.models import autoint  # noqa: F401
from agenticrs.models import din  # noqa: F401
from agenticrs.models import finalmlp  # noqa: F401
