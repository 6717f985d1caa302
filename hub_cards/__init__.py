"""Model-card templates for published boosted models (Jinja, rendered by rllm_zoo.hub.cards)."""
