"""The tiny offline models live in the package (vlfactory.models.tiny); tests import them from here."""

from vlfactory.models.tiny import *  # noqa: F401,F403
from vlfactory.models.tiny import MARKER, REASONING_TOKENS, SPECIAL_TOKENS, VERSIONS  # noqa: F401
