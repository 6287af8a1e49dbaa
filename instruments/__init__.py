"""The catalogue: facilities, instruments, testing services, hours, outages, qualifications."""
