"""PII detection (Presidio + an offline spaCy model) and desensitization (mask, pseudonymize,
restore). The guard that uses it is :mod:`shared_guards.guards.pii`."""

import os

os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")  # before anything imports presidio/tldextract
