"""The prompt_toolkit front end."""
