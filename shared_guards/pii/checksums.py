"""Check-digit validators used by the recognizers (pure functions, no regex, no I/O)."""

from __future__ import annotations

import datetime
import math
import string
from collections import Counter

_CN_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CN_CHECK = "10X98765432"


def digits_only(text: str) -> str:
    return "".join(c for c in text if c.isdigit())


def luhn_ok(number: str) -> bool:
    """Luhn (mod 10) check of the digits in ``number`` (separators ignored)."""
    ds = digits_only(number)
    if not 12 <= len(ds) <= 19:
        return False
    total = 0
    for i, ch in enumerate(reversed(ds)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def iban_ok(iban: str) -> bool:
    """ISO 13616 mod-97 check (spaces and dashes ignored, case-insensitive)."""
    s = "".join(c for c in iban if c.isalnum()).upper()
    if not 15 <= len(s) <= 34 or not s[:2].isalpha() or not s[2:4].isdigit():
        return False
    rearranged = s[4:] + s[:4]
    try:
        num = "".join(str(int(c, 36)) for c in rearranged)
    except ValueError:
        return False
    return int(num) % 97 == 1


def cn_resident_id_ok(value: str) -> bool:
    """Chinese resident identity card (GB 11643-1999): 17 digits, a valid birth date in digits 7-14,
    and an ISO 7064 MOD 11-2 check character (0-9 or X)."""
    s = value.strip().upper()
    if len(s) != 18 or not s[:17].isdigit() or not (s[17].isdigit() or s[17] == "X"):
        return False
    try:
        born = datetime.date(int(s[6:10]), int(s[10:12]), int(s[12:14]))
    except ValueError:
        return False
    if not datetime.date(1900, 1, 1) <= born <= datetime.date.today():
        return False
    total = sum(int(c) * w for c, w in zip(s[:17], _CN_WEIGHTS, strict=True))
    return _CN_CHECK[total % 11] == s[17]


_NINO_BAD_FIRST = set("DFIQUV")
_NINO_BAD_SECOND = set("DFIQUVO")
_NINO_BAD_PREFIX = {"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"}


def uk_nino_ok(value: str) -> bool:
    """UK National Insurance number: two prefix letters (HMRC's excluded letters and prefixes
    rejected), six digits, suffix A-D. NINOs carry no check digit; the prefix rules are the check."""
    s = "".join(c for c in value if c.isalnum()).upper()
    if len(s) != 9 or not s[:2].isalpha() or not s[2:8].isdigit() or s[8] not in "ABCD":
        return False
    if s[0] in _NINO_BAD_FIRST or s[1] in _NINO_BAD_SECOND or s[:2] in _NINO_BAD_PREFIX:
        return False
    return True


def us_ssn_ok(value: str) -> bool:
    """SSA structure: area not 000/666/9xx, group not 00, serial not 0000, not all one digit.
    Published sample numbers (078-05-1120, 123-45-6789) are *not* rejected: in a prompt they are
    still meant as an SSN, and masking them costs nothing."""
    ds = digits_only(value)
    if len(ds) != 9 or len(set(ds)) == 1:
        return False
    return not (ds[:3] in ("000", "666") or ds[0] == "9" or ds[3:5] == "00" or ds[5:] == "0000")


_B64ISH = set(string.ascii_letters + string.digits + "+/_-=.")


def shannon_entropy(s: str) -> float:
    """Bits per character."""
    if not s:
        return 0.0
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in Counter(s).values())


def looks_like_secret(token: str, *, min_len: int = 16, min_entropy: float = 3.3) -> bool:
    """A generic high-entropy token: long enough, token alphabet, mixed classes, high entropy."""
    if len(token) < min_len or any(c not in _B64ISH for c in token):
        return False
    classes = sum((any(c.islower() for c in token), any(c.isupper() for c in token), any(c.isdigit() for c in token)))
    if classes < 2:
        return False
    if token.isdigit() or token.isalpha():
        return False
    return shannon_entropy(token) >= min_entropy
