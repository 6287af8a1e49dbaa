"""Passwords, login throttling, bearer and personal tokens, page sessions, authorization."""
