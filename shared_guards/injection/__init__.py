"""Prompt-injection detection: normalization, the pattern layer, rule packs and context validation.

Library API (framework-free; the guards in ``shared_guards.guards.injection_*`` wrap it)::

    from shared_guards.injection import scan_patterns, analyze_context
    r = scan_patterns("Ignore all previous instructions")   # PatternResult(score, matches, ...)
    c = analyze_context(request)                            # ContextResult(score, findings)

Compiled automata are cached per process by rule-pack hash (see :func:`get_matcher`).
"""

from shared_guards.injection.normalize import Normalized, View, normalize
from shared_guards.injection.patterns import (
    PatternMatch,
    PatternMatcher,
    PatternResult,
    combine,
    default_matcher,
    get_matcher,
    scan_patterns,
)
from shared_guards.injection.rulepack import RulePack, RulePackError, RuleStore, load_pack, shared_store

__all__ = [
    "Normalized",
    "PatternMatch",
    "PatternMatcher",
    "PatternResult",
    "RulePack",
    "RulePackError",
    "RuleStore",
    "View",
    "combine",
    "default_matcher",
    "get_matcher",
    "load_pack",
    "normalize",
    "scan_patterns",
    "shared_store",
]
