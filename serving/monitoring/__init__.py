"""The live side of monitoring: folding predicted rows into window summaries, in memory."""
