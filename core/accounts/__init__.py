"""Organisations, users and role assignments."""
