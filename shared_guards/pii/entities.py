"""Entity names (Presidio's where Presidio has one) and label mappings."""

from __future__ import annotations

from enum import StrEnum


class Entity(StrEnum):
    PERSON = "PERSON"
    EMAIL_ADDRESS = "EMAIL_ADDRESS"
    PHONE_NUMBER = "PHONE_NUMBER"
    US_SSN = "US_SSN"
    CREDIT_CARD = "CREDIT_CARD"
    IBAN_CODE = "IBAN_CODE"
    IP_ADDRESS = "IP_ADDRESS"
    STREET_ADDRESS = "STREET_ADDRESS"
    LOCATION = "LOCATION"
    DATE_TIME = "DATE_TIME"
    NRP = "NRP"
    URL = "URL"
    US_DRIVER_LICENSE = "US_DRIVER_LICENSE"
    US_PASSPORT = "US_PASSPORT"
    PASSPORT = "PASSPORT"
    UK_NINO = "UK_NINO"
    CN_RESIDENT_ID = "CN_RESIDENT_ID"
    MEDICAL_RECORD_NUMBER = "MEDICAL_RECORD_NUMBER"
    SECRET = "SECRET"
    ORGANIZATION = "ORGANIZATION"
    AGE = "AGE"
    ZIP_CODE = "ZIP_CODE"  # postal codes (not a Presidio entity; HIPAA Safe Harbor counts them)
    TITLE = "TITLE"  # honorifics before a name (Mr., Dr.): they give away gender and profession


ALL_ENTITIES: tuple[Entity, ...] = tuple(Entity)

# Entities that come from the spaCy NER model (everything else is a pattern recognizer).
NER_ENTITIES: frozenset[Entity] = frozenset(
    {Entity.PERSON, Entity.LOCATION, Entity.DATE_TIME, Entity.NRP, Entity.ORGANIZATION}
)

# spaCy label -> our entity. ORGANIZATION is off in every preset except ``all``.
SPACY_LABELS: dict[str, Entity] = {
    "PERSON": Entity.PERSON,
    "GPE": Entity.LOCATION,
    "LOC": Entity.LOCATION,
    "FAC": Entity.LOCATION,
    "DATE": Entity.DATE_TIME,
    "TIME": Entity.DATE_TIME,
    "NORP": Entity.NRP,
    "ORG": Entity.ORGANIZATION,
}

# Labels other datasets use -> the label we emit (used by ``slg eval pii`` on gold spans).
GOLD_LABEL_MAP: dict[str, str] = {
    "GPE": "LOCATION",
    "LOC": "LOCATION",
    "FAC": "LOCATION",
    "DOMAIN_NAME": "URL",
    "PER": "PERSON",
    "NORP": "NRP",
    "DATE": "DATE_TIME",
    "TIME": "DATE_TIME",
    "EMAIL": "EMAIL_ADDRESS",
    "PHONE": "PHONE_NUMBER",
    "SSN": "US_SSN",
    "IBAN": "IBAN_CODE",
    "ZIP": "ZIP_CODE",
    "POSTCODE": "ZIP_CODE",
    "POSTAL_CODE": "ZIP_CODE",
}


# Presidio's own evaluation maps addresses to LOCATION; ``slg eval pii`` does too by default.
PRESIDIO_OUTPUT_MAP: dict[str, str] = {"STREET_ADDRESS": "LOCATION"}


def normalize_label(label: str, *, presidio: bool = True) -> str:
    """A gold label as the name we emit; with ``presidio``, STREET_ADDRESS folds into LOCATION."""
    out = GOLD_LABEL_MAP.get(label, label)
    return PRESIDIO_OUTPUT_MAP.get(out, out) if presidio else out
