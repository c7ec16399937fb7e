"""Signed, versioned rule packs for the pattern layer (a threat-intelligence feed format).

A pack is one YAML (or JSON) file. Its last line is the signature over every byte before it::

    name: slg-core
    version: "2026.11.26.1"
    macros: {IGNORE: "(?:ignore|disregard|forget)"}
    signals: {homoglyph: 0.3}
    rules:
      - {id: override.ignore_previous, category: instruction_override, weight: 0.9, lang: en,
         regex: ["{IGNORE} (?:\\S+ ){0,3}previous (?:\\S+ ){0,2}instructions"]}
    # slg-signature: ed25519:<key id>:<base64 signature>

Signatures are Ed25519 (``cryptography``). Trusted public keys are ``*.pub`` files (base64 of the
32 raw bytes, or PEM) in ``shared_guards/data/rules/trusted_keys/`` plus any directory named by
the ``SLG_RULES_TRUSTED_KEYS`` environment variable (``os.pathsep``-separated) or passed in.
Private keys are never part of the package: maintainers sign with ``slg rules sign --key PATH``.
The dev/test key pair under ``tests/data/rules_dev_key/`` is for tests only and is not trusted
unless a test passes it in.

:class:`RuleStore` holds the current pack and reloads it when the file changes; a pack that fails
to parse or verify is refused, the current one kept and the reason logged (never rule text).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import re
import tempfile
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shared_guards.errors import ConfigError
from shared_guards.filewatch import FileWatch

log = logging.getLogger("shared_guards.injection.rulepack")

DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "rules"
DEFAULT_PACK = DATA_DIR / "core.yaml"
TRUSTED_KEYS_DIR = DATA_DIR / "trusted_keys"
SIG_PREFIX = b"# slg-signature: "
MAX_PACK_BYTES = 5 * 1024 * 1024

CATEGORIES = (
    "instruction_override",
    "role_hijack",
    "prompt_leak",
    "persona_jailbreak",
    "delimiter_injection",
    "exfiltration",
    "obfuscation",
    "indirect_injection",
    "harmful_intent",
)


class RulePackError(ConfigError):
    """A rule pack is malformed, unsigned, signed by an unknown key or tampered with."""


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9_]+(\.[a-z0-9_]+)+$")
    category: str
    weight: float = Field(gt=0.0, le=1.0)
    lang: str = "en"
    description: str = ""
    phrases: list[str] = Field(default_factory=list, description="Literal phrases, matched on word boundaries.")
    regex: list[str] = Field(default_factory=list, description="RE2 patterns on the word view ({MACRO} expanded).")
    raw_regex: list[str] = Field(default_factory=list, description="RE2 patterns on the punctuation-keeping view.")

    @field_validator("category")
    @classmethod
    def _cat(cls, v: str) -> str:
        if v not in CATEGORIES:
            raise ValueError(f"unknown category {v!r}; one of {', '.join(CATEGORIES)}")
        return v


class PackModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    version: str = Field(min_length=1)
    description: str = ""
    macros: dict[str, str] = Field(default_factory=dict)
    signals: dict[str, float] = Field(default_factory=dict, description="Weights of normalizer flags.")
    rules: list[Rule]


@dataclass(frozen=True)
class RulePack:
    name: str
    version: str
    rules: tuple[Rule, ...]
    macros: dict[str, str] = field(default_factory=dict)
    signals: dict[str, float] = field(default_factory=dict)
    sha256: str = ""  # of the signed bytes: the compiled-matcher cache key
    key_id: str = ""
    source: str = ""

    @property
    def ident(self) -> str:
        return f"{self.name}@{self.version}"


# -- keys ----------------------------------------------------------------------------------------


def _ed25519() -> Any:
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:  # pragma: no cover - cryptography is a core dependency
        raise RulePackError("rule-pack signatures need the 'cryptography' package") from exc
    return ed25519


def key_id_of(public_raw: bytes) -> str:
    return hashlib.sha256(public_raw).hexdigest()[:16]


def _load_public(path: Path) -> bytes:
    data = path.read_bytes().strip()
    if data.startswith(b"-----BEGIN"):
        from cryptography.hazmat.primitives import serialization

        key = serialization.load_pem_public_key(data)
        raw: bytes = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return raw
    try:
        raw = base64.b64decode(data, validate=True)
    except binascii.Error:
        raise RulePackError(f"public key {path.name}: not base64 or PEM") from None
    if len(raw) != 32:
        raise RulePackError(f"public key {path.name}: expected 32 bytes, got {len(raw)}")
    return raw


def trusted_keys(extra_dirs: Iterable[str | os.PathLike[str]] = ()) -> dict[str, bytes]:
    """``{key_id: raw public key}`` from the package's key dir, ``SLG_RULES_TRUSTED_KEYS`` and ``extra_dirs``."""
    dirs: list[Path] = [TRUSTED_KEYS_DIR]
    env = os.environ.get("SLG_RULES_TRUSTED_KEYS", "")
    dirs += [Path(p) for p in env.split(os.pathsep) if p]
    dirs += [Path(p) for p in extra_dirs]
    keys: dict[str, bytes] = {}
    for d in dirs:
        if d.is_file():
            files = [d]
        elif d.is_dir():
            files = sorted(d.glob("*.pub"))
        else:
            continue
        for f in files:
            raw = _load_public(f)
            keys[key_id_of(raw)] = raw
    return keys


def generate_keypair(private_path: str | os.PathLike[str], public_path: str | os.PathLike[str]) -> str:
    """Write a new Ed25519 key pair (private: PEM, 0600; public: base64). Returns the key id."""
    from cryptography.hazmat.primitives import serialization

    key = _ed25519().Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    Path(public_path).write_bytes(base64.b64encode(raw) + b"\n")
    return key_id_of(raw)


def _load_private(path: str | os.PathLike[str]) -> Any:
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise RulePackError(f"cannot load private key {path}: {type(exc).__name__}") from None
    if not isinstance(key, _ed25519().Ed25519PrivateKey):
        raise RulePackError(f"{path} is not an Ed25519 private key")
    return key


# -- signing and verification --------------------------------------------------------------------


def split_signature(data: bytes) -> tuple[bytes, bytes | None]:
    """``(signed_body, signature_line)``; the signature line is the last non-empty line."""
    stripped = data.rstrip(b"\r\n")
    idx = stripped.rfind(b"\n")
    last = stripped[idx + 1:]
    if last.startswith(SIG_PREFIX):
        return stripped[: idx + 1], last
    return data, None


def sign_bytes(body: bytes, private_key_path: str | os.PathLike[str]) -> bytes:
    """Return ``body`` (with any old signature line removed) followed by a new signature line."""
    from cryptography.hazmat.primitives import serialization

    body, _ = split_signature(body)
    if not body.endswith(b"\n"):
        body += b"\n"
    key = _load_private(private_key_path)
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    sig = base64.b64encode(key.sign(body))
    return body + SIG_PREFIX + b"ed25519:" + key_id_of(raw).encode() + b":" + sig + b"\n"


def verify_bytes(data: bytes, keys: dict[str, bytes]) -> tuple[bytes, str]:
    """Check the signature line of ``data``; returns ``(signed_body, key_id)`` or raises."""
    body, line = split_signature(data)
    if line is None:
        raise RulePackError("rule pack is not signed (no '# slg-signature:' last line)")
    try:
        alg, kid, sig_b64 = line[len(SIG_PREFIX):].decode("ascii").strip().split(":", 2)
        sig = base64.b64decode(sig_b64, validate=True)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise RulePackError("malformed signature line") from None
    if alg != "ed25519":
        raise RulePackError(f"unsupported signature algorithm {alg!r}")
    pub = keys.get(kid)
    if pub is None:
        raise RulePackError(f"rule pack signed by untrusted key {kid}")
    from cryptography.exceptions import InvalidSignature

    try:
        _ed25519().Ed25519PublicKey.from_public_bytes(pub).verify(sig, body)
    except InvalidSignature:
        raise RulePackError(f"signature check failed (key {kid}): the pack was modified after signing") from None
    return body, kid


# -- parsing -------------------------------------------------------------------------------------

_MACRO = re.compile(r"\{([A-Z][A-Z0-9_]*)\}")


def expand(pattern: str, macros: dict[str, str], _depth: int = 0) -> str:
    """Replace ``{NAME}`` with the macro (macros may use macros, 5 levels)."""
    if _depth > 5:
        raise RulePackError("macro nesting too deep")

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in macros:
            raise RulePackError(f"unknown macro {{{name}}}")
        return expand(macros[name], macros, _depth + 1)

    return _MACRO.sub(sub, pattern)


def parse_pack(body: bytes, *, source: str = "<pack>", key_id: str = "") -> RulePack:
    if len(body) > MAX_PACK_BYTES:
        raise RulePackError(f"{source}: rule pack larger than {MAX_PACK_BYTES} bytes")
    try:
        data = json.loads(body) if body.lstrip()[:1] in (b"{", b"[") else yaml.safe_load(body)
    except (yaml.YAMLError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RulePackError(f"{source}: not valid YAML/JSON ({type(exc).__name__})") from None
    try:
        model = PackModel.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise RulePackError(f"{source}: {loc}: {first['msg']} ({exc.error_count()} problem(s))") from None
    seen: set[str] = set()
    for r in model.rules:
        if r.id in seen:
            raise RulePackError(f"{source}: duplicate rule id {r.id}")
        seen.add(r.id)
        if not (r.phrases or r.regex or r.raw_regex):
            raise RulePackError(f"{source}: rule {r.id} has no phrases or patterns")
        for pat in (*r.regex, *r.raw_regex):
            expand(pat, model.macros)
    return RulePack(
        name=model.name,
        version=model.version,
        rules=tuple(model.rules),
        macros=dict(model.macros),
        signals=dict(model.signals),
        sha256=hashlib.sha256(body).hexdigest(),
        key_id=key_id,
        source=source,
    )


def load_pack(
    path: str | os.PathLike[str] | None = None,
    *,
    keys: dict[str, bytes] | None = None,
    trusted_key_dirs: Sequence[str | os.PathLike[str]] = (),
    require_signature: bool = True,
) -> RulePack:
    """Read, verify and parse a pack file (default: the bundled ``core.yaml``)."""
    p = Path(path) if path is not None else DEFAULT_PACK
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise RulePackError(f"cannot read rule pack {p}: {exc.strerror}") from None
    return load_pack_bytes(data, source=str(p), keys=keys, trusted_key_dirs=trusted_key_dirs,
                           require_signature=require_signature)


def load_pack_bytes(
    data: bytes,
    *,
    source: str = "<pack>",
    keys: dict[str, bytes] | None = None,
    trusted_key_dirs: Sequence[str | os.PathLike[str]] = (),
    require_signature: bool = True,
) -> RulePack:
    if require_signature:
        k = keys if keys is not None else trusted_keys(trusted_key_dirs)
        try:
            body, kid = verify_bytes(data, k)
        except RulePackError as exc:
            raise RulePackError(f"{source}: {exc}") from None
    else:
        body, _ = split_signature(data)
        kid = ""
    return parse_pack(body, source=source, key_id=kid)


def fetch(src: str, *, timeout: float = 10.0) -> bytes:
    """The bytes of a pack from a file path or an http(s) URL (bounded size)."""
    if src.startswith(("http://", "https://")):
        import httpx

        try:
            with httpx.stream("GET", src, timeout=timeout, follow_redirects=True) as resp:
                resp.raise_for_status()
                chunks: list[bytes] = []
                size = 0
                for chunk in resp.iter_bytes():
                    size += len(chunk)
                    if size > MAX_PACK_BYTES:
                        raise RulePackError(f"{src}: larger than {MAX_PACK_BYTES} bytes")
                    chunks.append(chunk)
                return b"".join(chunks)
        except httpx.HTTPError as exc:
            raise RulePackError(f"cannot fetch {src}: {type(exc).__name__}") from None
    try:
        return Path(src).read_bytes()
    except OSError as exc:
        raise RulePackError(f"cannot read {src}: {exc.strerror}") from None


def install(data: bytes, dest: str | os.PathLike[str]) -> Path:
    """Atomically write ``data`` to ``dest`` (temp file in the same directory, then rename)."""
    d = Path(dest)
    d.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".rulepack-", dir=d.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, d)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return d


# -- hot reload ----------------------------------------------------------------------------------


class RuleStore:
    """The current pack of one file; reloads when the file's (mtime, size) changes, checked at most
    every ``check_interval`` seconds on access. A pack that fails verification is refused and the
    current one kept (the reason is logged and kept in ``last_error``)."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        trusted_key_dirs: Sequence[str | os.PathLike[str]] = (),
        check_interval: float = 1.0,
        require_signature: bool = True,
    ) -> None:
        self.path = Path(path) if path is not None else DEFAULT_PACK
        self.trusted_key_dirs = tuple(trusted_key_dirs)
        self.check_interval = check_interval
        self.require_signature = require_signature
        self._lock = threading.Lock()
        self.last_error: str | None = None
        self._watch = FileWatch(self.path, check_interval)
        self._current = self._load()  # the first load must succeed: raises RulePackError

    def _load(self) -> RulePack:
        return load_pack(self.path, trusted_key_dirs=self.trusted_key_dirs,
                         require_signature=self.require_signature)

    def get(self) -> RulePack:
        if self._watch.changed():
            with self._lock:
                self._reload_locked()
        return self._current

    def reload(self) -> bool:
        """Load the file now. True when a valid pack was loaded; False keeps the current one."""
        with self._lock:
            self._watch.mark()
            return self._reload_locked()

    def _reload_locked(self) -> bool:
        try:
            pack = self._load()
        except RulePackError as exc:
            self.last_error = str(exc)
            log.error("rule pack refused, keeping %s: %s", self._current.ident, exc)
            return False
        if pack.sha256 != self._current.sha256:
            log.info("rule pack loaded: %s -> %s", self._current.ident, pack.ident)
        self._current = pack
        self.last_error = None
        return True


_stores: dict[tuple[str, tuple[str, ...], bool], RuleStore] = {}
_stores_lock = threading.Lock()


def shared_store(
    path: str | os.PathLike[str] | None = None,
    *,
    trusted_key_dirs: Sequence[str | os.PathLike[str]] = (),
    require_signature: bool = True,
) -> RuleStore:
    """One :class:`RuleStore` per (path, key dirs) per process (guards built per department share it)."""
    key = (str(Path(path).resolve()) if path is not None else str(DEFAULT_PACK),
           tuple(str(d) for d in trusted_key_dirs), require_signature)
    with _stores_lock:
        st = _stores.get(key)
        if st is None:
            st = _stores[key] = RuleStore(path, trusted_key_dirs=trusted_key_dirs,
                                          require_signature=require_signature)
        return st


__all__ = [
    "CATEGORIES",
    "DEFAULT_PACK",
    "Rule",
    "RulePack",
    "RulePackError",
    "RuleStore",
    "expand",
    "fetch",
    "generate_keypair",
    "install",
    "load_pack",
    "load_pack_bytes",
    "parse_pack",
    "shared_store",
    "sign_bytes",
    "trusted_keys",
    "verify_bytes",
]
