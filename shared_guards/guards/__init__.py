"""Built-in guards, one per module. Registered by name in :mod:`shared_guards.registry`."""
