"""The wire protocol: envelope models, their JSON codec, subjects and tokens, JSON Schemas."""
