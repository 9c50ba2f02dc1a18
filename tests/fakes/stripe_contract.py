"""Moved to billflow_local.standins.stripe_contract (the local demo uses it too); this name stays for the tests."""

import sys

from billflow_local.standins import stripe_contract

sys.modules[__name__] = stripe_contract
