"""Moved to billflow_local.standins.twenty_contract (the local demo uses it too); this name stays for the tests."""

import sys

from billflow_local.standins import twenty_contract

sys.modules[__name__] = twenty_contract
