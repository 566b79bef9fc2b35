"""Contracts and plumbing shared by every GOLD service: settings, errors, wire schemas, DB, jobs."""
