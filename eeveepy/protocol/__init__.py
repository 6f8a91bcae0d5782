"""The wire protocol: envelope models, their JSON codec, subjects and tokens, the rules of
command registrations, JSON Schemas."""
