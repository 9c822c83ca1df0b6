"""Use cases. Each opens one unit of work, records its audit event in it, and commits."""
