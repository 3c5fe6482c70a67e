"""STAND-IN of autogen-agentchat for the onbehalf tests (not AutoGen)."""
