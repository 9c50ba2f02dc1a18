"""Moved to billflow_local.standins.signing (the local demo uses it too); this name stays for the tests."""

import sys

from billflow_local.standins import signing

sys.modules[__name__] = signing
