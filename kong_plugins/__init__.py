"""Kong Gateway plugins of secure-llm-gateway (run by kong-pdk's plugin server)."""
