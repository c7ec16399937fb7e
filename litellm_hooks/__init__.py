"""secure-llm-gateway inside LiteLLM proxy: one guardrail class and a ``custom_auth`` function.

Register in LiteLLM's ``config.yaml``::

    general_settings:
      custom_auth: litellm_hooks.auth.custom_auth      # only without LiteLLM's database
    guardrails:
      - guardrail_name: secure-llm-guard
        litellm_params:
          guardrail: litellm_hooks.SecureLLMGuardrail
          mode: [pre_call, post_call]
          default_on: true
          policy_path: config/policy.yaml
"""

from litellm_hooks.guardrail import SecureLLMGuardrail

__all__ = ["SecureLLMGuardrail"]
