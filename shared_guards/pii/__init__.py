"""PII detection (Presidio + an offline spaCy model) and desensitization (mask, pseudonymize,
restore). The guard that uses it is :mod:`shared_guards.guards.pii`."""
