"""Actions per entity type and the named presets (``preset:`` in the guard options)."""

from __future__ import annotations

from enum import StrEnum

from shared_guards.pii.entities import Entity


class PIIAction(StrEnum):
    BLOCK = "block"  # refuse the request (400), naming the entity types only
    MASK = "mask"  # irreversible placeholder or partial mask
    PSEUDONYMIZE = "pseudonymize"  # <PERSON_1>, restored in the answer
    TAG = "tag"  # forward unchanged, record findings, mark the request
    IGNORE = "ignore"  # not detected at all


class MaskStyle(StrEnum):
    PLACEHOLDER = "placeholder"  # [US_SSN]
    PARTIAL = "partial"  # ***-**-1234: all but the last 4 letters/digits starred
    REDACT = "redact"  # [REDACTED]


class Preset(StrEnum):
    GDPR = "gdpr"
    HIPAA = "hipaa"
    PCI = "pci"
    ALL = "all"  # every entity, tagged (useful with overrides, and for evaluation)
    NONE = "none"  # nothing unless listed in ``entities``


E = Entity
A = PIIAction

_IDS = {E.US_SSN, E.UK_NINO, E.CN_RESIDENT_ID, E.PASSPORT, E.US_PASSPORT, E.US_DRIVER_LICENSE}

PRESETS: dict[Preset, dict[Entity, PIIAction]] = {
    # GDPR art. 4(1) personal data, kept usable: identities pseudonymized, identifiers masked.
    Preset.GDPR: {
        E.PERSON: A.PSEUDONYMIZE, E.EMAIL_ADDRESS: A.PSEUDONYMIZE, E.PHONE_NUMBER: A.MASK,
        E.STREET_ADDRESS: A.MASK, E.IP_ADDRESS: A.MASK, E.IBAN_CODE: A.MASK, E.CREDIT_CARD: A.MASK,
        E.MEDICAL_RECORD_NUMBER: A.MASK, E.ZIP_CODE: A.MASK, E.LOCATION: A.TAG, E.NRP: A.TAG, E.DATE_TIME: A.TAG,
        E.URL: A.TAG, E.SECRET: A.BLOCK, **{e: A.MASK for e in _IDS},
    },
    # HIPAA Safe Harbor (45 CFR 164.514(b)(2)) identifiers that text detection can find: names,
    # addresses, postcodes and places below state level, dates, phone/fax, email, SSN, medical record numbers,
    # account numbers (card, IBAN), licence numbers, URLs, IP addresses, other unique IDs.
    Preset.HIPAA: {
        E.PERSON: A.PSEUDONYMIZE, E.EMAIL_ADDRESS: A.PSEUDONYMIZE, E.PHONE_NUMBER: A.MASK,
        E.STREET_ADDRESS: A.MASK, E.ZIP_CODE: A.MASK, E.LOCATION: A.MASK, E.DATE_TIME: A.MASK, E.US_SSN: A.MASK,
        E.MEDICAL_RECORD_NUMBER: A.MASK, E.CREDIT_CARD: A.MASK, E.IBAN_CODE: A.MASK, E.URL: A.MASK,
        E.IP_ADDRESS: A.MASK, E.SECRET: A.BLOCK, **{e: A.MASK for e in _IDS},
    },
    # PCI DSS: the primary account number never leaves; cardholder name pseudonymized.
    Preset.PCI: {
        E.CREDIT_CARD: A.MASK, E.IBAN_CODE: A.MASK, E.PERSON: A.PSEUDONYMIZE, E.SECRET: A.BLOCK,
    },
    Preset.ALL: {e: A.TAG for e in Entity},
    Preset.NONE: {},
}

# Default mask style per entity when the config gives none.
DEFAULT_MASK_STYLE: dict[Entity, MaskStyle] = {
    E.CREDIT_CARD: MaskStyle.PARTIAL, E.US_SSN: MaskStyle.PARTIAL, E.IBAN_CODE: MaskStyle.PARTIAL,
}
