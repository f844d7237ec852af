"""Serving and talking to models: servers, endpoints, agents, memory estimates."""
