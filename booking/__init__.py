"""Bookings, booking rules, usage records, waitlist and sample service requests."""
