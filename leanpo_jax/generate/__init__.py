"""Self-generated preference data: the KV-cache sampler, A(V) losers, reflection winners."""
