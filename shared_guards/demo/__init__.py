"""The demo's embedded pieces: an OpenAI-compatible echo upstream and the process runner."""

from shared_guards.demo.echo import EchoUpstream

__all__ = ["EchoUpstream"]
