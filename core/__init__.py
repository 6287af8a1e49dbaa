"""The shared kernel: settings, storage, clock, accounts, auth, audit; every domain uses it."""
