"""Outbox delivery: e-mail, calendar files, reminders, in-app notices, webhooks."""
