"""Moved to billflow_local.standins.base (the local demo uses it too); this name stays for the tests."""

import sys

from billflow_local.standins import base

sys.modules[__name__] = base
