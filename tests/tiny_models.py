"""The tiny offline models live in the package (vlfactory.tiny); tests import them from here."""

from vlfactory.tiny import *  # noqa: F401,F403
from vlfactory.tiny import MARKER, REASONING_TOKENS, SPECIAL_TOKENS, VERSIONS  # noqa: F401
