"""The LLM side of the agent: the Claude planner (an advisor of the controller core)."""
