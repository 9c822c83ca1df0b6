"""Traffic policies on an alias: weighted variants (A/B/n), sticky assignment and shadows.

spec.py validates a policy body, allocation.py turns weights into bucket ranges, tables.py
and store.py keep it, service.py sets, shows and clears it (compare-and-set, audited), and
views.py is its HTTP API. Serving routes by it in serving/policies.py.
"""
