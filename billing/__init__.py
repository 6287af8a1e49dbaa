"""Charges, invoices, payments, subsidies and reconciliation."""
