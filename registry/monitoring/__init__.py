"""Monitoring per version: reference profiles, live windows, drift, ground truth, alerts.

The live side (folding predicted rows into window summaries) is in `serving/monitoring/`;
this package holds what is stored and judged: profiles, summaries read back and merged,
the statistics, labels, monitors and their alert states.
"""
