"""Search analytics (issue #24): search ids and events, the background writer, session
privacy, team-draft interleaving. SQL is in services/store/analytics*.py."""
