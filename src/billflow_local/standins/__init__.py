"""Stand-ins for the systems the local demo talks to: Stripe and Twenty servers that check every request
against the official contracts (trimmed copies in contracts/), and the webhook signing helpers."""
