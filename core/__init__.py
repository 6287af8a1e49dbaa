"""The shared kernel: settings, storage, clock, accounts, auth, audit. Every domain depends on it."""
